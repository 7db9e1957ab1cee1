"""
Settings for Champ Portal.

Everything is configurable from the environment and everything works with
nothing set (the "embedded default": SQLite + django-q2's ORM broker, secrets
generated once into ``var/``). See the README's "Configuration" section.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from champ_portal.env import (
    env,
    env_bool,
    env_float,
    env_int,
    env_list,
    secret_from_env_or_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("CHAMP_PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("CHAMP_PORTAL_DEBUG", False)

SECRET_KEY = secret_from_env_or_file(
    "CHAMP_PORTAL_SECRET_KEY", VAR_DIR / "secret_key", kind="django"
)

# Comma-separated Fernet keys, newest first: the first encrypts, all decrypt.
# Validated by the `runs.E001` system check (runs/checks.py) so that a garbled
# value fails `manage.py check` loudly instead of at the first token use.
CHAMP_PORTAL_TOKEN_KEYS = secret_from_env_or_file(
    "CHAMP_PORTAL_TOKEN_KEYS", VAR_DIR / "token_keys", kind="fernet"
)

ALLOWED_HOSTS = env_list("CHAMP_PORTAL_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CHAMP_PORTAL_CSRF_TRUSTED_ORIGINS", [])

# Where organisations point by default: the built-in simulator on loopback
# (`make run` starts it on this port). Production: https://api.champ.ai
CHAMP_API_BASE = env("CHAMP_API_BASE", "http://127.0.0.1:8765")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_filters",
    "django_q",
    "axes",
    "runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "champ_portal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "champ_portal.wsgi.application"

# --- Database ---------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'champ_portal.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the poller writes; IMMEDIATE takes the
    # write lock at BEGIN so concurrent writers queue on the busy timeout
    # instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
        ),
    }
    # A file, not :memory:, so tests can start real qcluster processes on it;
    # one per test process (removed at the end of the run).
    DATABASES["default"]["TEST"] = {
        "NAME": env("CHAMP_PORTAL_TEST_DB", str(VAR_DIR / f"test_{os.getpid()}.sqlite3"))
    }
else:
    # One test database per test process, so two suites (two developers, or
    # both legs of `make test` run by hand) never drop each other's database.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses any login attempt while the username/IP pair is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- I18N / time ------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env("CHAMP_PORTAL_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # No manifest: pages render before (or without) `collectstatic`.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve from the finders too, so the demo works without a collectstatic step
# having been run after every template change.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security ---------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Production (HTTPS) hardening: on by default unless in the local demo.
_HTTPS = env_bool("CHAMP_PORTAL_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = env_bool("CHAMP_PORTAL_SSL_REDIRECT", _HTTPS)
SECURE_HSTS_SECONDS = env_int("CHAMP_PORTAL_HSTS_SECONDS", 31536000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS
SECURE_HSTS_PRELOAD = _HTTPS
# Behind a TLS-terminating reverse proxy that sets X-Forwarded-Proto.
if env_bool("CHAMP_PORTAL_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Client IPs are taken from REMOTE_ADDR unless the peer is one of these proxies.
CHAMP_PORTAL_TRUSTED_PROXIES = env_list("CHAMP_PORTAL_TRUSTED_PROXIES", [])

# Content-Security-Policy (django-csp): no inline script or style anywhere;
# htmx is loaded from our own origin and told not to inject its indicator CSS.
from csp.constants import NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Login throttling (django-axes): after 5 failures for one username from one
# IP, that pair is locked out for 15 minutes, even with the right password.
AXES_FAILURE_LIMIT = env_int("CHAMP_PORTAL_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CHAMP_PORTAL_LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The client's address by the audit log's rules (runs/request_info.py):
# REMOTE_ADDR, or X-Forwarded-For only from CHAMP_PORTAL_TRUSTED_PROXIES.
AXES_CLIENT_IP_CALLABLE = "runs.request_info.client_ip"

# --- django-q2 --------------------------------------------------------------
# `retry` must exceed `timeout`, or a long task is delivered a second time
# while the first is still running.
CHAMP_PORTAL_BROKER = env("CHAMP_PORTAL_BROKER", "orm")
Q_CLUSTER = {
    "name": env("CHAMP_PORTAL_CLUSTER_NAME", "champ_portal"),
    # A sweep occupies a worker for up to CHAMP_POLL_SWEEP_SECONDS: keep one
    # more worker than sweeps for the watchdog and other tasks.
    "workers": env_int("CHAMP_PORTAL_WORKERS", 2 if IS_SQLITE else 3),
    "timeout": 90,
    "retry": 120,
    "max_attempts": 2,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 200,
    "poll": 0.2,
    "label": "Task queue",
    "cache": "django_q",
}
if CHAMP_PORTAL_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
elif CHAMP_PORTAL_BROKER.startswith(("redis://", "rediss://", "unix://")):
    Q_CLUSTER["redis"] = CHAMP_PORTAL_BROKER
else:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"CHAMP_PORTAL_BROKER must be 'orm' or a redis:// URL, got {CHAMP_PORTAL_BROKER!r}"
    )

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # django-q2 keeps cluster stats in a cache every process can see.
    "django_q": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache" / "django_q"),
    },
}

# --- Champ poller -----------------------------------------------------------
# SQLite has one writer at a time, so one sweep (with 50 concurrent polls) is
# the embedded default; PostgreSQL takes several, on several machines. A sweep
# keeps about one core busy: more sweeps than the worker machines have cores
# slow polling down (`make bench` on 2 cores: p95 latency 1.4 s with one
# sweep, 1.0 s with two, 1.7 s with four), so raise this with the cores.
CHAMP_POLL_MAX_SWEEPS = env_int("CHAMP_POLL_MAX_SWEEPS", 1 if IS_SQLITE else 2)
CHAMP_POLL_BATCH_SIZE = env_int("CHAMP_POLL_BATCH_SIZE", 200)
CHAMP_POLL_CONCURRENCY = env_int("CHAMP_POLL_CONCURRENCY", 50)
CHAMP_POLL_SWEEP_SECONDS = env_int("CHAMP_POLL_SWEEP_SECONDS", 50)
# The fastest a run is polled (young or just changed); slower runs scale from it.
CHAMP_POLL_INTERVAL_SECONDS = env_float("CHAMP_POLL_INTERVAL_SECONDS", 1.0)
CHAMP_POLL_LEASE_SECONDS = env_int("CHAMP_POLL_LEASE_SECONDS", 30)
CHAMP_POLL_HEARTBEAT_STALE_SECONDS = env_int("CHAMP_POLL_HEARTBEAT_STALE_SECONDS", 20)

# --- Email (failure / stuck-run notifications) --------------------------------
# The embedded default prints emails on the worker's console.
EMAIL_BACKEND = env("CHAMP_PORTAL_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("CHAMP_PORTAL_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("CHAMP_PORTAL_EMAIL_PORT", 25)
EMAIL_HOST_USER = env("CHAMP_PORTAL_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("CHAMP_PORTAL_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("CHAMP_PORTAL_EMAIL_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env("CHAMP_PORTAL_FROM_EMAIL", "Champ Portal <champ-portal@localhost>")
# The portal's own address, for links in emails.
CHAMP_PORTAL_URL = env("CHAMP_PORTAL_URL", "http://127.0.0.1:8000")

# --- Run safeguards ---------------------------------------------------------
CHAMP_DUPLICATE_WINDOW_MINUTES = env_int("CHAMP_DUPLICATE_WINDOW_MINUTES", 2)
CHAMP_STUCK_DEFAULT_MINUTES = env_int("CHAMP_STUCK_DEFAULT_MINUTES", 60)
CHAMP_STUCK_MIN_MINUTES = env_int("CHAMP_STUCK_MIN_MINUTES", 5)
CHAMP_STUCK_SUSPENDED_MINUTES = env_int("CHAMP_STUCK_SUSPENDED_MINUTES", 1440)

# --- Logging ----------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("CHAMP_PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx/httpcore log request lines and, at DEBUG, headers: never let
        # them carry an Authorization header into the log.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
