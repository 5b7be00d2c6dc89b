"""Settings of the django-scim2 test peer: one app (scimpeer), a sqlite database in
$GATEHOUSE_DJANGO_SCIM_DIR, and /scim/v2/ guarded by the bearer token in
$GATEHOUSE_DJANGO_SCIM_TOKEN (scimpeer.middleware). Loopback only; not for production."""
import os
from pathlib import Path

try:
    DATA_DIR = Path(os.environ["GATEHOUSE_DJANGO_SCIM_DIR"])
except KeyError:
    raise SystemExit("GATEHOUSE_DJANGO_SCIM_DIR must name the directory for the sqlite database")

# The bearer token clients must send; empty (unset) means every /scim/ request is refused.
SCIM_BEARER_TOKEN = os.environ.get("GATEHOUSE_DJANGO_SCIM_TOKEN", "")

# A test peer on loopback: nothing here is signed for anyone else.
SECRET_KEY = "gatehouse-django-scim-test-peer"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# Only the peer's own app: its User builds on AbstractBaseUser, so neither
# django.contrib.auth nor contenttypes (nor their migrations) are needed.
INSTALLED_APPS = ["scimpeer"]
MIDDLEWARE = ["scimpeer.middleware.BearerTokenMiddleware"]
ROOT_URLCONF = "peer.urls"
AUTH_USER_MODEL = "scimpeer.User"
# A SCIM client may send a password; a test peer need not hash it slowly.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

SCIM_SERVICE_PROVIDER = {
    "USER_ADAPTER": "scimpeer.adapters.SCIMUser",
    "GROUP_ADAPTER": "scimpeer.adapters.SCIMGroup",
    "GROUP_MODEL": "scimpeer.models.Group",
    # meta.location and friends: absolute, from the address the request came to.
    "BASE_LOCATION_GETTER": "scimpeer.adapters.base_location",
    "WWW_AUTHENTICATE_HEADER": 'Bearer realm="gatehouse-django-scim"',
    "AUTHENTICATION_SCHEMES": [
        {
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": True,
        }
    ],
}

# Errors (django-scim2 logs the exception behind every 500) and runserver's request lines go
# to stderr, which scripts/start-django-scim.sh sends to DIR/django-scim.log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_scim": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
