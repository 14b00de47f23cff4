import os
import tempfile

# Tests must not pick up a user's tracking server or data directory by accident.
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Nor download benchmark files from the internet or read a user's download cache:
# a missing file stays missing (tests/test_datasets_download.py serves files on 127.0.0.1).
os.environ.pop("TSESSM_DATA_URL", None)
os.environ["TSESSM_OFFLINE"] = "1"
os.environ["TSESSM_DATA_CACHE"] = os.path.join(tempfile.gettempdir(), f"tsessm-test-data-cache-{os.getpid()}")
