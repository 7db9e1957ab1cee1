"""
The portal's data: organisations and their members, encrypted API tokens,
workflow presets, runs, their append-only status events and the audit trail.

Only ``runs/lifecycle.py`` changes ``Run.status``; only ``runs/crypto.py``
sees key material; ``AuditEntry.objects.record()`` is the only way to write
an audit entry.
"""

import hashlib
import ipaddress
import json
import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone

from runs import crypto
from runs.jsondiff import json_equal


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an append-only record."""


class AppendOnlyQuerySet(models.QuerySet):
    """A queryset that refuses bulk updates and deletes."""

    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    """Rows are inserted once and never updated or deleted."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


# --- Organisations and membership --------------------------------------------


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def role_at_least(role: str | None, minimum: str) -> bool:
    """True when ``role`` is ``minimum`` or stronger (viewer < operator < admin)."""
    return role is not None and ROLE_RANK.get(role, 0) >= ROLE_RANK[minimum]


class OrganisationQuerySet(models.QuerySet):
    def for_user(self, user, minimum_role: str = Role.VIEWER):
        """Organisations ``user`` is a member of with at least ``minimum_role``."""
        roles = [role for role in Role.values if role_at_least(role, minimum_role)]
        return self.filter(memberships__user=user, memberships__role__in=roles).distinct()


def default_api_base_url() -> str:
    return settings.CHAMP_API_BASE


class Organisation(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    api_base_url = models.URLField(
        "Champ API base URL",
        default=default_api_base_url,
        help_text="https://api.champ.ai for real Champ; the built-in simulator by default.",
    )
    webhook_secret_hash = models.CharField(max_length=128, blank=True, editable=False)
    webhook_secret_created_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = OrganisationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "organisation"

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("organisation_detail", args=[self.slug])

    def role_of(self, user) -> str | None:
        """The role ``user`` holds here, or None for a non-member."""
        if not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).only("role").first()
        return membership.role if membership else None


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["organisation__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="unique_membership")
        ]

    def __str__(self):
        return f"{self.user} · {self.organisation} ({self.role})"


# --- API tokens ----------------------------------------------------------------


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        """Tokens that may be sent to Champ: not revoked, not rejected by Champ."""
        return self.filter(revoked_at__isnull=True, rejected_at__isnull=True)


class ApiToken(models.Model):
    """
    A Champ organisation API token, write-only.

    ``set_secret()`` seals the plaintext; ``reveal()`` opens it for the length
    of one request. Nothing else ever returns it: lists and admin show ``hint``.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="tokens")
    # Bound into the ciphertext, so a ciphertext copied to another row fails.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    label = models.CharField(max_length=100)
    ciphertext = models.TextField(editable=False)
    hint = models.CharField(max_length=16, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Champ answered 401 with this token: it must be re-entered.
    rejected_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.label} ({self.hint})"

    def set_secret(self, plaintext: str) -> None:
        """Seal ``plaintext`` into this row (call before save)."""
        self.ciphertext = crypto.encrypt_token(
            plaintext, organisation_id=self.organisation_id, token_uid=self.uid
        )
        self.hint = crypto.mask_token(plaintext)

    def reveal(self) -> str:
        """The plaintext, for sending one request. Raises ``crypto.TokenDecryptError``."""
        return crypto.decrypt_token(
            self.ciphertext, organisation_id=self.organisation_id, token_uid=self.uid
        )

    def can_decrypt(self) -> bool:
        try:
            self.reveal()
        except crypto.TokenDecryptError:
            return False
        return True

    @property
    def state(self) -> str:
        """revoked, rejected (Champ said 401), needs re-entry (undecryptable) or active."""
        if self.revoked_at:
            return "revoked"
        if self.rejected_at:
            return "rejected"
        if not self.can_decrypt():
            return "needs re-entry"
        return "active"


# --- Presets -------------------------------------------------------------------


class WorkflowPresetQuerySet(models.QuerySet):
    def for_user(self, user, minimum_role: str = Role.VIEWER):
        return self.filter(organisation__in=Organisation.objects.for_user(user, minimum_role))

    def live(self):
        return self.filter(archived=False)


class WorkflowPreset(models.Model):
    """
    A saved way to start one workflow. Its content (name, workflow, input,
    description) is versioned: ``save()`` writes a ``PresetVersion`` whenever
    the content differs from the current version, so every edit — from the
    portal, the admin or code — leaves a numbered, attributed snapshot. Set
    ``changed_by`` on the instance before saving to record who made the edit.
    """

    #: The fields a ``PresetVersion`` snapshots.
    CONTENT_FIELDS = ("name", "workflow_id", "input", "description")

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="presets"
    )
    name = models.CharField(max_length=200)
    workflow_id = models.PositiveBigIntegerField("workflow ID", validators=[MinValueValidator(1)])
    input = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    archived = models.BooleanField(default=False)
    #: The number of the current ``PresetVersion`` (v1 at creation).
    version = models.PositiveIntegerField(default=1, editable=False)
    # Safeguards (not versioned: they govern how runs start, not what they do).
    duplicate_window_minutes = models.PositiveSmallIntegerField(
        "duplicate guard (minutes)",
        default=2,
        help_text="Ask before starting a run identical to one started this many minutes ago "
        "(same organisation, workflow and input). 0 turns the guard off.",
    )
    max_open_runs = models.PositiveIntegerField(
        "limit on runs in progress",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Refuse to start another run while this many are pending, in progress "
        "or suspended. Empty: no limit.",
    )
    stuck_after_minutes = models.PositiveIntegerField(
        "stuck after (minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Flag a run pending or in progress this long without a change. Empty: "
        "three times the preset's usual (95th percentile) duration.",
    )
    suspended_limit_minutes = models.PositiveIntegerField(
        "stuck when suspended for (minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Flag a run suspended this long. Empty: the site default.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkflowPresetQuerySet.as_manager()

    class Meta:
        ordering = ["organisation__name", "name"]
        verbose_name = "workflow preset"
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "name"], name="unique_preset_name_per_org"
            )
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and not set(update_fields) & set(self.CONTENT_FIELDS):
            return super().save(*args, **kwargs)
        with transaction.atomic():
            if self._state.adding:
                self.version = 1
                super().save(*args, **kwargs)
                self._write_version(self.created_by)
                return None
            # Lock the row: two edits at once get consecutive numbers.
            current = (
                WorkflowPreset.objects.select_for_update()
                .filter(pk=self.pk)
                .values_list("version", flat=True)
                .first()
            )
            latest = self.versions.filter(number=current).first() if current else None
            if latest is not None and _same_content(latest.content(), self.content()):
                self.version = current
                return super().save(*args, **kwargs)
            self.version = (current or 0) + 1
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "version", "updated_at"}
            super().save(*args, **kwargs)
            self._write_version(getattr(self, "changed_by", None))
        return None

    def get_absolute_url(self):
        return reverse("preset_detail", args=[self.pk])

    def content(self) -> dict:
        """What a version snapshots: name, workflow_id, input, description."""
        return {name: getattr(self, name) for name in self.CONTENT_FIELDS}

    def _write_version(self, user) -> "PresetVersion":
        return PresetVersion.objects.create(
            preset=self,
            number=self.version,
            created_by=user,
            created_at=self.updated_at,
            **self.content(),
        )

    def current_version(self) -> "PresetVersion | None":
        return self.versions.filter(number=self.version).first()


def _same_content(a: dict, b: dict) -> bool:
    return all(
        json_equal(a[name], b[name]) if name == "input" else a[name] == b[name] for name in a
    )


class PresetVersion(AppendOnlyModel):
    """A preset's content as it was from ``created_at`` until the next version."""

    preset = models.ForeignKey(WorkflowPreset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    workflow_id = models.PositiveBigIntegerField("workflow ID")
    input = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["preset", "-number"]
        verbose_name = "preset version"
        constraints = [
            models.UniqueConstraint(fields=["preset", "number"], name="unique_preset_version")
        ]

    def __str__(self):
        return f"{self.name} v{self.number}"

    @property
    def label(self) -> str:
        return f"v{self.number}"

    def content(self) -> dict:
        return {name: getattr(self, name) for name in WorkflowPreset.CONTENT_FIELDS}


# --- Runs ----------------------------------------------------------------------


class RunStatus(models.TextChoices):
    # Champ's six (CHAMP_API.md) ...
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SUSPENDED = "suspended", "Suspended"
    SKIPPED = "skipped", "Skipped"
    # ... and two of the portal's own.
    # Champ refused the trigger (401/404/422, or unreachable before sending):
    # nothing was created at Champ.
    REJECTED = "rejected", "Rejected"
    # The trigger request failed in transit: Champ may or may not have created
    # the run. Never retried blindly (the API has no idempotency key).
    UNKNOWN = "unknown", "Unknown"


#: Statuses a run never leaves.
FINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.REJECTED}
)
#: Statuses the poller follows (Champ knows the run and it may still change).
OPEN_STATUSES = frozenset({RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.SUSPENDED})
# The same in one fixed order, for `status IN (…)` filters: SQLite uses a partial
# index only when the query's list is written exactly as the index's condition.
OPEN_STATUS_LIST = (RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.SUSPENDED)
FAILURE_STATUS_LIST = (RunStatus.FAILED, RunStatus.REJECTED)


class RunQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(organisation__in=Organisation.objects.for_user(user))

    def open(self):
        return self.filter(status__in=OPEN_STATUS_LIST)


class Run(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="runs")
    preset = models.ForeignKey(
        WorkflowPreset, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # The preset's input at the moment of the run (it may be edited later).
    preset_input = models.JSONField(null=True, blank=True)
    # The preset version the run was started from, and the paths of the input
    # that differed from that version's input (``[]``: none; NULL: no preset).
    preset_version = models.ForeignKey(
        PresetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    overrides = models.JSONField(null=True, blank=True)
    token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    workflow_id = models.PositiveBigIntegerField("workflow ID")
    champ_run_id = models.BigIntegerField("Champ run ID", null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.UNKNOWN, editable=False
    )
    input = models.JSONField(default=dict, blank=True)
    # jsondiff.json_digest(input), set by lifecycle.open_run: the duplicate-run
    # guard finds an equal recent input through an index instead of loading
    # and comparing every recent run's input.
    input_digest = models.CharField(max_length=64, blank=True, editable=False)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    champ_url = models.URLField(max_length=500, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    # One-time nonce of the form that started the run: a double submission
    # finds the first run instead of starting a second. NULL (not "") for runs
    # without one, so the partial unique constraint ignores them.
    submission_key = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, editable=False
    )
    triggered_at = models.DateTimeField(default=timezone.now, db_index=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Poll bookkeeping (runs/tasks.py).
    next_poll_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    poll_attempts = models.PositiveIntegerField(default=0)
    poll_failures = models.PositiveIntegerField(default=0)
    last_poll_error = models.TextField(blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-triggered_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "champ_run_id"],
                condition=models.Q(champ_run_id__isnull=False),
                name="unique_champ_run_per_org",
            ),
            models.UniqueConstraint(
                fields=["submission_key"],
                condition=models.Q(submission_key__isnull=False),
                name="unique_run_submission_key",
            ),
        ]
        indexes = [
            # The poller: due open runs.
            models.Index(
                fields=["next_poll_at"],
                condition=models.Q(next_poll_at__isnull=False),
                name="run_due_poll_idx",
            ),
            # History filters, newest first.
            models.Index(fields=["organisation", "-triggered_at"], name="run_org_time_idx"),
            models.Index(fields=["status", "-triggered_at"], name="run_status_time_idx"),
            # Also covers preset health (runs per window, by status, durations):
            # those read the index alone, never the rows.
            models.Index(
                fields=["preset", "-triggered_at", "status", "finished_at"],
                name="run_preset_time_idx",
            ),
            models.Index(fields=["triggered_by", "-triggered_at"], name="run_user_time_idx"),
            models.Index(fields=["workflow_id", "-triggered_at"], name="run_workflow_time_idx"),
            # The duplicate-run guard: this organisation's runs of a workflow
            # with an equal input, newest first.
            models.Index(
                fields=["organisation", "workflow_id", "input_digest", "-triggered_at"],
                name="run_twin_idx",
            ),
            # Admin search by Champ run ID across organisations (the unique
            # constraint's index leads with the organisation).
            models.Index(fields=["champ_run_id"], name="run_champ_run_id_idx"),
            # Preset health: a preset's last failure without walking its successes.
            models.Index(
                fields=["preset", "-triggered_at"],
                condition=models.Q(status__in=FAILURE_STATUS_LIST),
                name="run_preset_failure_idx",
            ),
            # Open runs only (few): per preset (the limit on runs in progress),
            # and longest unchanged first (stuck runs).
            models.Index(
                fields=["preset", "status_changed_at"],
                condition=models.Q(status__in=OPEN_STATUS_LIST),
                name="run_open_preset_idx",
            ),
            models.Index(
                fields=["status_changed_at"],
                condition=models.Q(status__in=OPEN_STATUS_LIST),
                name="run_open_changed_idx",
            ),
        ]

    def __str__(self):
        return f"Run #{self.pk} · workflow {self.workflow_id} · {self.status}"

    def get_absolute_url(self):
        return reverse("run_detail", args=[self.pk])

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def duration(self):
        end = self.finished_at or (None if self.is_final else timezone.now())
        return (end - self.triggered_at) if end else None


class EventSource(models.TextChoices):
    TRIGGER = "trigger", "Trigger"
    POLL = "poll", "Poll"
    WEBHOOK = "webhook", "Webhook"
    USER = "user", "User"


class RunEvent(AppendOnlyModel):
    """One observed status change of a run. Written only by runs/lifecycle.py."""

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveIntegerField()
    from_status = models.CharField(max_length=16, choices=RunStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=RunStatus.choices)
    observed_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=16, choices=EventSource.choices)
    # What Champ returned (or what the portal saw) when the change was observed.
    snapshot = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["run", "seq"]
        verbose_name = "run event"
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_run_event_seq")]

    def __str__(self):
        return f"{self.run_id}#{self.seq}: {self.from_status or '—'} → {self.to_status}"


# --- Audit trail -----------------------------------------------------------------


class AuditAction(models.TextChoices):
    LOGIN = "login", "Logged in"
    LOGOUT = "logout", "Logged out"
    LOGIN_FAILED = "login_failed", "Failed login"
    LOGIN_LOCKED_OUT = "login_locked_out", "Locked out after failed logins"
    ORGANISATION_CREATED = "organisation_created", "Organisation created"
    ORGANISATION_CHANGED = "organisation_changed", "Organisation changed"
    MEMBER_ADDED = "member_added", "Member added"
    MEMBER_ROLE_CHANGED = "member_role_changed", "Member role changed"
    MEMBER_REMOVED = "member_removed", "Member removed"
    TOKEN_ADDED = "token_added", "Token added"
    TOKEN_REVOKED = "token_revoked", "Token revoked"
    TOKEN_DELETED = "token_deleted", "Token deleted"
    TOKEN_REJECTED = "token_rejected", "Token rejected by Champ"
    TOKENS_ROTATED = "tokens_rotated", "Token keys rotated"
    PRESET_CREATED = "preset_created", "Preset created"
    PRESET_CHANGED = "preset_changed", "Preset changed"
    PRESET_ARCHIVED = "preset_archived", "Preset archived"
    RUN_TRIGGERED = "run_triggered", "Run triggered"
    RUN_AGAIN = "run_again", "Run again"
    WEBHOOK_SECRET_CREATED = "webhook_secret_created", "Webhook secret created"
    WEBHOOK_REJECTED = "webhook_rejected", "Webhook call rejected"
    WEBHOOK_UNKNOWN_RUN = "webhook_unknown_run", "Webhook for an unknown run"
    NOTIFICATIONS_CHANGED = "notifications_changed", "Notification settings changed"


class AuditEntryManager(models.Manager.from_queryset(AppendOnlyQuerySet)):
    def record(
        self,
        *,
        action: str,
        actor=None,
        actor_label: str = "",
        organisation: Organisation | None = None,
        target: models.Model | None = None,
        changes: dict | None = None,
        ip: str | None = None,
    ) -> "AuditEntry":
        """
        Append one entry to the hash chain.

        ``actor`` is a user; without one, ``actor_label`` says who acted
        (``system``, ``webhook``, or the username tried in a failed login).
        """
        if actor is not None and not actor_label:
            actor_label = actor.get_username()
        entry = self.model(
            action=action,
            actor=actor,
            actor_label=actor_label or "system",
            organisation=organisation,
            target_type=target._meta.label if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            target_repr=str(target)[:200] if target is not None else "",
            changes=changes or {},
            ip=ipaddress.ip_address(ip).compressed if ip else None,
            created_at=timezone.now(),
        )
        with transaction.atomic():
            _lock_audit_chain()
            last = self.order_by("-id").values_list("hash", flat=True).first()
            entry.prev_hash = last or ""
            entry.hash = entry.compute_hash()
            entry.save()
        return entry


def _lock_audit_chain() -> None:
    """Serialise appends so two entries never claim the same predecessor."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [7_140_001])
    # SQLite: transactions are IMMEDIATE (settings), so the writer already
    # holds the database write lock here.


class AuditEntry(AppendOnlyModel):
    """Who did what, when, from where. Append-only, hash-chained."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    # PROTECT: nulling these would break the hash chain. Deactivate users
    # instead of deleting them.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150)
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    objects = AuditEntryManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"

    def compute_hash(self) -> str:
        """SHA-256 over the previous hash and this entry's content."""
        content = {
            "created_at": self.created_at.isoformat(),
            "action": self.action,
            "actor_id": self.actor_id,
            "actor_label": self.actor_label,
            "organisation_id": self.organisation_id,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_repr": self.target_repr,
            "changes": self.changes,
            # Canonical form: the database may hand back another spelling of
            # the same address (Django stores "::ffff:1.2.3.4" for an
            # IPv4-mapped IPv6 address that ipaddress writes "::ffff:102:304").
            "ip": ipaddress.ip_address(str(self.ip)).compressed if self.ip else None,
        }
        blob = self.prev_hash + json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


# --- Notifications ----------------------------------------------------------------


class NotificationSettings(models.Model):
    """A user's choice of emails about the runs they started (all off until chosen)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    email = models.EmailField(
        "send to",
        blank=True,
        help_text="Leave empty to use the address of your account.",
    )
    on_failure = models.BooleanField("when a run I started fails", default=False)
    on_stuck = models.BooleanField("when a run I started is stuck", default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "notification settings"
        verbose_name_plural = "notification settings"

    def __str__(self):
        return f"notifications of {self.user}"

    @property
    def address(self) -> str:
        return self.email or self.user.email


class NotificationKind(models.TextChoices):
    FAILED = "failed", "Run failed"
    STUCK = "stuck", "Run stuck"


class RunNotification(models.Model):
    """
    One email about one run: the row is claimed (unique) before the email is
    sent, so a run never causes the same email twice, whoever sees it first.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="notifications")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=NotificationKind.choices)
    address = models.EmailField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "run notification"
        constraints = [
            models.UniqueConstraint(fields=["run", "user", "kind"], name="unique_run_notification")
        ]

    def __str__(self):
        return f"{self.get_kind_display()} · run #{self.run_id} → {self.address or self.user}"


# --- Poller bookkeeping -----------------------------------------------------------


class SweepSlot(models.Model):
    """
    One of a fixed number of places a ``poll_sweep`` may run in.

    A sweep claims a free or stale slot with a conditional update and renews
    ``heartbeat_at`` while it runs; the watchdog schedule restarts sweeps
    whose heartbeat went stale (a crashed worker).
    """

    number = models.PositiveSmallIntegerField(unique=True)
    owner = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    polls = models.PositiveBigIntegerField(default=0, help_text="Polls done by the current sweep.")

    class Meta:
        ordering = ["number"]
        verbose_name = "sweep slot"

    def __str__(self):
        return f"sweep slot {self.number}"
