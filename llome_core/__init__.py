"""llome_core: the LLOME method, Ehrlich functions and the genetic algorithm, pure torch.

No web, database or Celery imports live here: the command line and the service drive the same code.
"""
