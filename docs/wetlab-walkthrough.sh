#!/usr/bin/env bash
# The wet-lab round trip against `llome serve` (embedded default), run in an empty directory:
# preview, commit (skip_rejected), release, template, FASTA, upload the filled template, lineage.
set -e
URL=http://127.0.0.1:8765
KEY=$(cat .llome/api-key)
AUTH="Authorization: Bearer $KEY"

# 1. a wet-lab campaign (GA optimizer here for speed; "llome" is the default), with a reference
#    sequence and a 14-day label TTL; the Idempotency-Key makes a retried POST safe
curl -s -X POST $URL/campaigns -H "$AUTH" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: create-lab-campaign-1' \
  -d '{"name": "GFP demo", "oracle": {"kind": "wetlab", "alphabet": "ACDEFGHIKLMNPQRSTVWY",
       "length": 8, "reference": "MKTAYIAK", "label_ttl": "14d"},
       "optimizer": {"kind": "ga", "mutation_prob": 0.5}, "batch_size": 20, "rounds": 2}' | jq '{id, status}'

# 2. seed data: preview (nothing stored but the upload and its report), then commit
printf 'sequence,score\nMKTAYIAK,0.50\nMKTAYIAR,0.61\nMKTGYIAK,0.42\nMRTAYIAK,0.55\nMKTAYLAK,0.47\nMKSAYIAK,0.39\nMKTAYIGK,0.58\nAKTAYIAK,0.33\nMKTAWIAK,0.52\nMKTAYIAX,0.70\n' > seed.csv
curl -s -X POST $URL/campaigns/1/uploads -H "$AUTH" -F file=@seed.csv | jq '{id, status, report}'
# row 11 has an X (not in the alphabet): commit refuses, naming the row ...
curl -s -X POST $URL/campaigns/1/uploads/1/commit -H "$AUTH" | jq '{status, detail}'
# ... unless the lab chooses to store the 9 valid rows and leave row 11 out
curl -s -X POST "$URL/campaigns/1/uploads/1/commit?skip_rejected=true" -H "$AUTH" \
  | jq '{status, campaign_status, skipped: .report.skipped_rows}'

# 3. wait for the batch, then download the template (the template is the upload)
for i in $(seq 60); do curl -s $URL/campaigns/1 -H "$AUTH" | jq -e '.status == "awaiting_labels"' >/dev/null && break; sleep 1; done
BID=$(curl -s $URL/campaigns/1/batches -H "$AUTH" | jq '.items[0].id')
curl -s -X POST $URL/campaigns/1/batches/$BID/release -H "$AUTH" | jq '{released, status_counts}'
curl -s $URL/campaigns/1/batches/$BID/template.csv -H "$AUTH" -o template.csv
head -3 template.csv
curl -s $URL/campaigns/1/batches/$BID/fasta -H "$AUTH" | head -2

# 4. the lab fills in score (and status for failures) and uploads the same file back
awk -F, 'BEGIN{OFS=","} NR==1{print; next} NR==2{$5="failed_expression"; print; next}
         {$4=sprintf("%.2f", (NR%7)/10); print}' template.csv > results.csv
head -3 results.csv
UP=$(curl -s -X POST $URL/campaigns/1/uploads -H "$AUTH" -F file=@results.csv -F batch_id=$BID)
echo "$UP" | jq '{id, status, report: .report | {rows, accepted, rejected, new_measurements}}'
UID_=$(echo "$UP" | jq '.id')
curl -s -X POST $URL/campaigns/1/uploads/$UID_/commit -H "$AUTH" | jq '{status, campaign_status, new: .report.new_measurements}'
# the same file again: one stored copy (200, the same upload)
curl -s -o /dev/null -w '%{http_code}\n' -X POST $URL/campaigns/1/uploads -H "$AUTH" -F file=@results.csv -F batch_id=$BID

# 5. why was a candidate proposed, and what happened to it
CID=$(sed -n 2p template.csv | cut -d, -f1)
curl -s $URL/campaigns/1/candidates/$CID -H "$AUTH" | jq '{id, sequence, status, round, parent_sequence, mutations, reference_mutations, score, feasible}'
curl -s $URL/campaigns/1/uploads -H "$AUTH" | jq '.items[] | {id, kind, status, sha256, api_key_id, created_at}'
