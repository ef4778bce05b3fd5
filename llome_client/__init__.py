"""``llome_client``: drive a llome campaign from Python or a notebook.

from llome_client import Client
client = Client("http://127.0.0.1:8000", api_key)
campaign = client.create_campaign({...})
batch = campaign.wait_for_batch()
"""

from llome_client.client import PNG, Batch, Campaign, Client
from llome_client.errors import (
    BadRequest,
    CampaignEnded,
    Conflict,
    LlomeApiError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceBusy,
    Unauthorized,
    UploadRejected,
    ValidationFailed,
)

__all__ = [
    "PNG",
    "BadRequest",
    "Batch",
    "Campaign",
    "CampaignEnded",
    "Client",
    "Conflict",
    "LlomeApiError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "ServiceBusy",
    "Unauthorized",
    "UploadRejected",
    "ValidationFailed",
]
