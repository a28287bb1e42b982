import pytest


@pytest.fixture(autouse=True)
def clean_course_env(monkeypatch):
    """Each test starts from the defaults, whatever the shell running pytest has set."""
    for name in ("COURSE_QUICK", "COURSE_DEVICE", "COURSE_DATA_DIR", "COURSE_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
