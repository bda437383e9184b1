"""`sopkit serve`: the HTTP service (FastAPI + uvicorn) in front of the live loop."""
