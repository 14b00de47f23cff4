import os

# Tests must not pick up a user's tracking server or data directory by accident.
os.environ.pop("MLFLOW_TRACKING_URI", None)
