"""Token encryption: round-trip, binding to its row, rotation, corruption."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from runs import crypto
from runs.models import ApiToken
from tests.conftest import KNOWN_TOKEN


def test_token_round_trips_and_is_not_stored_in_clear(token_a):
    stored = ApiToken.objects.get(pk=token_a.pk)
    assert stored.reveal() == KNOWN_TOKEN
    assert KNOWN_TOKEN not in stored.ciphertext
    assert stored.hint == "api_…7c"[:0] + "api_…" + KNOWN_TOKEN[-4:]


def test_ciphertext_copied_to_another_organisations_token_does_not_decrypt(token_a, token_b):
    ApiToken.objects.filter(pk=token_b.pk).update(ciphertext=token_a.ciphertext)
    token_b.refresh_from_db()
    with pytest.raises(crypto.TokenDecryptError):
        token_b.reveal()


def test_ciphertext_copied_to_another_row_of_the_same_organisation_does_not_decrypt(
    token_a, org_a, alice
):
    from runs import organisations as org_actions

    other = org_actions.token_add(
        organisation=org_a, label="Other", secret="api_other_token_value", user=alice
    )
    ApiToken.objects.filter(pk=other.pk).update(ciphertext=token_a.ciphertext)
    other.refresh_from_db()
    with pytest.raises(crypto.TokenDecryptError):
        other.reveal()


def test_rotation_then_dropping_the_old_key_keeps_every_token_readable(settings, token_a, token_b):
    old_key = settings.CHAMP_PORTAL_TOKEN_KEYS
    new_key = Fernet.generate_key().decode()
    settings.CHAMP_PORTAL_TOKEN_KEYS = f"{new_key},{old_key}"
    call_command("rotate_token_keys")
    settings.CHAMP_PORTAL_TOKEN_KEYS = new_key
    for token in ApiToken.objects.all():
        assert token.reveal() in {KNOWN_TOKEN, "api_bbbbbbbbbbbbbbbb_bob"}


def test_rotation_reports_undecryptable_tokens_and_exits_non_zero(settings, token_a, token_b):
    ApiToken.objects.filter(pk=token_b.pk).update(ciphertext="garbage")
    with pytest.raises(CommandError, match="1 token"):
        call_command("rotate_token_keys")
    token_b.refresh_from_db()
    assert token_b.ciphertext == "garbage"  # left untouched


def test_wrong_key_is_a_typed_error_not_a_crash(settings, token_a):
    settings.CHAMP_PORTAL_TOKEN_KEYS = Fernet.generate_key().decode()
    token = ApiToken.objects.get(pk=token_a.pk)
    with pytest.raises(crypto.TokenDecryptError):
        token.reveal()
    assert token.state == "needs re-entry"


def test_corrupt_ciphertext_shows_needs_reentry_and_the_page_still_renders(
    client_for, alice, token_a
):
    ApiToken.objects.filter(pk=token_a.pk).update(ciphertext=token_a.ciphertext[:-6] + "AAAAAA")
    before = ApiToken.objects.get(pk=token_a.pk).ciphertext
    response = client_for(alice).get(token_a.organisation.get_absolute_url())
    assert response.status_code == 200
    assert "needs re-entry" in response.content.decode()
    assert ApiToken.objects.get(pk=token_a.pk).ciphertext == before


def test_mask_shows_prefix_and_last_four_only():
    assert crypto.mask_token("api_abcdefghijkl") == "api_…ijkl"
