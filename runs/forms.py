"""Forms: validation of everything a user types."""

import json
import re
import secrets
from urllib.parse import urlsplit

from django import forms
from django.contrib.auth import get_user_model
from django.utils.text import slugify

from runs.crypto import TOKEN_PREFIX
from runs.lifecycle import storable
from runs.models import (
    ApiToken,
    Membership,
    NotificationSettings,
    Organisation,
    Role,
    WorkflowPreset,
)

# Champ tokens are `api_` followed by random characters (CHAMP_API.md).
TOKEN_RE = re.compile(r"^api_[A-Za-z0-9_\-\.]{8,256}$")


class OrganisationForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = ["name", "slug", "api_base_url"]
        help_texts = {"slug": "Used in URLs and in the webhook address. Leave blank to derive it."}

    slug = forms.SlugField(max_length=80, required=False)
    api_base_url = forms.URLField(
        label="Champ API base URL",
        assume_scheme="https",
        help_text="https://api.champ.ai for real Champ; the built-in simulator by default.",
    )

    def clean_slug(self):
        slug = self.cleaned_data.get("slug") or slugify(self.cleaned_data.get("name", ""))
        if not slug:
            raise forms.ValidationError("Give the organisation a name or a slug.")
        clash = Organisation.objects.filter(slug=slug).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("An organisation with this slug already exists.")
        return slug

    def clean_api_base_url(self):
        return self.cleaned_data["api_base_url"].rstrip("/")


class TokenForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="What the token is for, e.g. “CI bot”.")
    secret = forms.CharField(
        label="Champ API token",
        max_length=300,
        strip=True,
        # render_value=False: a re-displayed form never echoes the token back.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Created in Champ under Tokens → Create Token (scope “API”). "
        "It is encrypted at once and never shown again.",
    )

    def clean_secret(self):
        secret = self.cleaned_data["secret"]
        if not secret.startswith(TOKEN_PREFIX):
            raise forms.ValidationError(
                "That is not a Champ API token: API tokens start with “api_”."
            )
        if not TOKEN_RE.match(secret):
            raise forms.ValidationError(
                "That token looks malformed: after “api_” expect at least 8 letters, "
                "digits, dashes or underscores, and no spaces."
            )
        return secret


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def __init__(self, *args, organisation: Organisation, **kwargs):
        super().__init__(*args, **kwargs)
        self.organisation = organisation

    def clean_username(self):
        username = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no active user called “{username}”.")
        if Membership.objects.filter(user=user, organisation=self.organisation).exists():
            raise forms.ValidationError(f"{username} is already a member.")
        self.member = user
        return username


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


# --- Presets and runs ------------------------------------------------------------

#: The largest run input accepted, as UTF-8 bytes of the JSON text.
INPUT_MAX_BYTES = 64 * 1024
#: Deeper nesting is refused: it only costs stack when the input is shown again.
INPUT_MAX_DEPTH = 64
DASHBOARD_URL_EXAMPLE = "https://dash.champ.ai/app/workflows/123"
#: A one-time form nonce (``new_submission_key()`` makes 22 characters).
SUBMISSION_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{16,64}$")
_MAX_WORKFLOW_ID = 2**63 - 1  # PositiveBigIntegerField

_JSON_KINDS = {
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def new_submission_key() -> str:
    """A fresh one-time nonce for a form that starts a run."""
    return secrets.token_urlsafe(16)


def clean_submission_key(value) -> str | None:
    """The nonce a form carried, or None when missing or malformed (no duplicate guard)."""
    if isinstance(value, str) and SUBMISSION_KEY_RE.match(value):
        return value
    return None


def parse_workflow_id(value) -> int:
    """
    A workflow id from what a user typed: ``123`` or the workflow's dashboard URL.

    Champ's workflow id is the last segment of its dashboard URL
    (``https://dash.champ.ai/app/workflows/<ID>``, CHAMP_API.md). Raises
    ``ValidationError`` with a message that says what to type instead.
    """
    text = str(value).strip()
    if "://" in text:
        parts = urlsplit(text)
        segments = [segment for segment in parts.path.split("/") if segment]
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or len(segments) < 2
            or segments[-2] != "workflows"
            or not segments[-1].isdecimal()
        ):
            raise forms.ValidationError(
                f"That URL does not end in a workflow ID: paste a workflow's dashboard URL "
                f"such as {DASHBOARD_URL_EXAMPLE}, or type the number.",
                code="invalid_url",
            )
        text = segments[-1]
    if not re.fullmatch(r"[+-]?\d+", text):
        raise forms.ValidationError(
            "Enter the workflow ID (a whole number) or paste the workflow's dashboard URL, "
            f"e.g. {DASHBOARD_URL_EXAMPLE}.",
            code="invalid",
        )
    number = int(text)
    if number <= 0:
        raise forms.ValidationError(
            "The workflow ID must be a positive whole number (1 or more).", code="min_value"
        )
    if number > _MAX_WORKFLOW_ID:
        raise forms.ValidationError("That workflow ID is too large.", code="max_value")
    return number


def _depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def check_json_size(size: int, *, what: str = "The input") -> None:
    """Refuse an input of more than ``INPUT_MAX_BYTES`` (``size`` in bytes of JSON text)."""
    if size > INPUT_MAX_BYTES:
        raise forms.ValidationError(
            f"{what} is {size / 1024:.1f} KB; the limit is {INPUT_MAX_BYTES // 1024} KB.",
            code="too_large",
        )


def parse_json_object(text: str | None, *, what: str = "The input") -> dict:
    """
    Parse a run input typed by a user: a JSON object of at most 64 KB.

    Empty text is ``{}`` (Champ accepts a run without input). Raises
    ``ValidationError`` saying what is wrong and where (line and column).
    """
    text = (text or "").strip()
    if not text:
        return {}
    check_json_size(len(text.encode("utf-8")), what=what)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            code="invalid_json",
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise forms.ValidationError(
            f"{what} is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    except RecursionError:
        raise forms.ValidationError(
            f"{what} is nested too deeply (at most {INPUT_MAX_DEPTH} levels).", code="too_deep"
        ) from None
    return check_json_object(value, what=what)


def check_json_object(value, *, what: str = "The input") -> dict:
    """
    The checks of ``parse_json_object`` that apply to parsed JSON: an object,
    not nested too deeply, storable. For forms whose field parses the JSON
    itself (Django admin's JSON fields).
    """
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise forms.ValidationError(
            f'{what} must be a JSON object, got {kind}. Wrap it like {{"key": …}}.',
            code="not_an_object",
        )
    if _depth(value, INPUT_MAX_DEPTH) > INPUT_MAX_DEPTH:
        raise forms.ValidationError(
            f"{what} is nested too deeply (at most {INPUT_MAX_DEPTH} levels).", code="too_deep"
        )
    if storable(value) != value:
        # Valid JSON, but no database can keep it (PostgreSQL refuses \u0000 in
        # jsonb) and no page can show it (a lone surrogate is not UTF-8).
        raise forms.ValidationError(
            f"{what} contains a NUL character (\\u0000) or an unpaired surrogate escape "
            "(\\ud800-\\udfff), which cannot be stored: remove it.",
            code="unstorable",
        )
    return value


class WorkflowIdField(forms.CharField):
    """A positive workflow id, typed or pasted as the workflow's dashboard URL."""

    def __init__(self, **kwargs):
        kwargs.setdefault("label", "Workflow ID")
        kwargs.setdefault(
            "help_text",
            f"The number at the end of the workflow's dashboard URL ({DASHBOARD_URL_EXAMPLE}); "
            "pasting the whole URL works too.",
        )
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
        )
        super().__init__(**kwargs)

    def to_python(self, value):
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        return parse_workflow_id(text)


class JsonObjectField(forms.CharField):
    """A JSON object typed into a textarea (see ``parse_json_object``)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Input (JSON)")
        kwargs.setdefault(
            "help_text",
            'A JSON object handed to the workflow\'s Start node, e.g. {"customer_id": 42}. '
            f"Leave empty for none. At most {INPUT_MAX_BYTES // 1024} KB.",
        )
        kwargs.setdefault(
            "widget",
            forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "json"}),
        )
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return value

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        return parse_json_object(super().to_python(value))


class PresetForm(forms.ModelForm):
    """
    Create or edit a preset; the organisation is chosen at creation only.

    ``base_version`` (hidden) is the version the edit form was opened on, so a
    save over someone else's newer version is caught (``PresetConflict``).
    Safeguard fields left out of a submission keep their current values.
    """

    SAFEGUARDS = (
        "duplicate_window_minutes",
        "max_open_runs",
        "stuck_after_minutes",
        "suspended_limit_minutes",
    )

    workflow_id = WorkflowIdField()
    input = JsonObjectField()
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )
    base_version = forms.IntegerField(required=False, widget=forms.HiddenInput, min_value=1)

    class Meta:
        model = WorkflowPreset
        fields = [
            "organisation",
            "name",
            "workflow_id",
            "input",
            "description",
            "duplicate_window_minutes",
            "max_open_runs",
            "stuck_after_minutes",
            "suspended_limit_minutes",
        ]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["organisation"]
            self.initial.setdefault("base_version", self.instance.version)
        else:
            del self.fields["base_version"]
            choices = Organisation.objects.for_user(user, Role.OPERATOR).order_by("name")
            self.fields["organisation"].queryset = choices
            self.fields["organisation"].help_text = "Only organisations where you can run."
            if len(choices) == 1 and not self.initial.get("organisation"):
                self.initial["organisation"] = choices[0].pk
        if self.is_bound:
            missing = [name for name in self.SAFEGUARDS if name not in self.data]
            if missing:
                self.data = self.data.copy()
                for name in missing:
                    value = self.get_initial_for_field(self.fields[name], name)
                    self.data[name] = "" if value is None else value
        self.fields["duplicate_window_minutes"].required = False

    def clean_duplicate_window_minutes(self):
        value = self.cleaned_data.get("duplicate_window_minutes")
        return self.instance.duplicate_window_minutes if value is None else value

    def clean(self):
        cleaned = super().clean()
        organisation = cleaned.get("organisation") or (
            self.instance.organisation if self.instance.organisation_id else None
        )
        name = cleaned.get("name")
        if organisation and name:
            clash = WorkflowPreset.objects.filter(organisation=organisation, name=name).exclude(
                pk=self.instance.pk
            )
            if clash.exists():
                self.add_error("name", f"{organisation} already has a preset called “{name}”.")
        return cleaned


class SavePresetForm(forms.Form):
    """Save a run's input as a new preset, or as a new version of the run's preset."""

    NEW, VERSION = "new", "version"

    mode = forms.ChoiceField(widget=forms.RadioSelect, label="Save as")
    name = forms.CharField(max_length=200, required=False, help_text="For a new preset.")
    description = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )
    input = JsonObjectField(help_text="The run's input; edit it before saving if you like.")

    def __init__(self, *args, run, **kwargs):
        super().__init__(*args, **kwargs)
        self.run = run
        choices = [(self.NEW, "A new preset")]
        if run.preset is not None:
            choices.append(
                (self.VERSION, f"A new version of “{run.preset.name}” (now v{run.preset.version})")
            )
        self.fields["mode"].choices = choices
        self.initial.setdefault("mode", self.VERSION if run.preset is not None else self.NEW)
        self.initial.setdefault("input", run.input)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("mode") == self.NEW:
            name = (cleaned.get("name") or "").strip()
            if not name:
                self.add_error("name", "Give the new preset a name.")
            elif WorkflowPreset.objects.filter(
                organisation=self.run.organisation, name=name
            ).exists():
                self.add_error(
                    "name", f"{self.run.organisation} already has a preset called “{name}”."
                )
            cleaned["name"] = name
        return cleaned


class NotificationSettingsForm(forms.ModelForm):
    class Meta:
        model = NotificationSettings
        fields = ["on_failure", "on_stuck", "email"]

    def clean(self):
        cleaned = super().clean()
        wants = cleaned.get("on_failure") or cleaned.get("on_stuck")
        if wants and not (cleaned.get("email") or self.instance.user.email):
            self.add_error(
                "email", "Your account has no email address: enter one to send the emails to."
            )
        return cleaned


class RunForm(forms.Form):
    """
    Start a run by hand: organisation, token (when there is a choice), workflow, input.

    Pass ``preset`` when the form was opened from a preset: the run is
    recorded as that preset's when it keeps the preset's organisation and
    workflow (``cleaned_data["preset"]``).
    """

    organisation = forms.ModelChoiceField(queryset=Organisation.objects.none())
    token = forms.TypedChoiceField(
        label="API token",
        required=False,
        coerce=int,
        empty_value=None,
        help_text="Which of the organisation's tokens to send. Default: its newest active token.",
    )
    workflow_id = WorkflowIdField()
    input = JsonObjectField()
    submission_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    #: Fields copied into the duplicate guard's "run anyway?" form.
    RESUBMITTED = ("organisation", "token", "workflow_id", "input", "submission_key")

    def __init__(self, *args, user, preset: WorkflowPreset | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.preset = preset
        organisations = list(Organisation.objects.for_user(user, Role.OPERATOR).order_by("name"))
        self.fields["organisation"].queryset = Organisation.objects.filter(
            pk__in=[organisation.pk for organisation in organisations]
        ).order_by("name")
        if len(organisations) == 1 and not self.initial.get("organisation"):
            self.initial["organisation"] = organisations[0].pk
        tokens: dict[int, list[ApiToken]] = {}
        for token in ApiToken.objects.active().filter(organisation__in=organisations):
            tokens.setdefault(token.organisation_id, []).append(token)
        self.fields["token"].choices = [("", "Newest active token")] + [
            (
                organisation.name,
                [(token.pk, f"{token.label} ({token.hint})") for token in tokens[organisation.pk]],
            )
            for organisation in organisations
            if organisation.pk in tokens
        ]
        # The choice is shown only when some organisation has several tokens;
        # the field is validated either way.
        self.show_token = any(len(group) > 1 for group in tokens.values())

    def clean_submission_key(self):
        return clean_submission_key(self.cleaned_data.get("submission_key"))

    def clean(self):
        cleaned = super().clean()
        organisation = cleaned.get("organisation")
        token_id = cleaned.get("token")
        cleaned["token"] = None
        if organisation is not None and token_id is not None:
            candidates = ApiToken.objects.active().filter(organisation=organisation)
            token = candidates.filter(pk=token_id).first()
            if token is None:
                self.add_error(
                    "token",
                    f"That token is not an active token of {organisation}: choose one of its "
                    "tokens, or leave “Newest active token”.",
                )
            else:
                cleaned["token"] = token
        preset = self.preset
        cleaned["preset"] = (
            preset
            if preset is not None
            and not preset.archived
            and organisation is not None
            and preset.organisation_id == organisation.pk
            and cleaned.get("workflow_id") == preset.workflow_id
            else None
        )
        return cleaned
