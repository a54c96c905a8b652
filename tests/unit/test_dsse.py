"""DSSE signing / verification, in-toto statements and key files (docs/architecture.md §7)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import CanonicalError
from schemas.messages import JobResult, RunEvent, SignedEnvelope, SlaBreach
from signing.dsse import PAYLOAD_TYPE_INTOTO, pae, sign, verify
from signing.keys import (
    ENV_VAR,
    KeyFileError,
    SigningKey,
    generate_keypair,
    keyid_of,
    load_public_keys,
    load_signing_key,
    public_key_document,
)
from signing.statement import (
    PREDICATE_JOB_COMPLETED,
    PREDICATE_RUN_COMPLETED,
    PREDICATE_SLA_BREACH,
    STATEMENT_TYPE,
    build_statement,
    event_id,
    image_subject,
    run_subject,
    sign_completion,
    statement_bytes,
)

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def key_a() -> SigningKey:
    return SigningKey.from_seed(SEED_A)


def key_b() -> SigningKey:
    return SigningKey.from_seed(SEED_B)


def trusted(*keys: SigningKey) -> dict[str, object]:
    return {k.keyid: k.verify_key for k in keys}


def job_result() -> JobResult:
    return JobResult(
        job_id="j" * 64,
        run_id="r1",
        tenant="acme",
        image_digest=DIGEST,
        priority="high",
        status="completed",
        finished_at=T0,
        verdict="fail",
    )


# ---------------------------------------------------------------- PAE


def test_pae_matches_the_dsse_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", "\u00e9".encode()) == b"DSSEv1 3 t\xc3\xa9 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


# ---------------------------------------------------------------- sign / verify


def test_round_trip_and_envelope_shape() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b'{"a":1}', [key_a()])
    assert base64.b64decode(env.payload) == b'{"a":1}'
    assert env.signatures[0].keyid == key_a().keyid == keyid_of(key_a().verify_key)
    assert len(base64.b64decode(env.signatures[0].sig)) == 64
    result = verify(env, trusted(key_a()))
    assert result.ok
    assert result.error is None
    assert result.keyid == key_a().keyid
    assert result.statement == {"a": 1}


def test_keyid_is_hex_sha256_of_raw_public_key() -> None:
    import hashlib

    assert key_a().keyid == hashlib.sha256(bytes(key_a().verify_key)).hexdigest()


def test_signing_is_deterministic_byte_for_byte() -> None:
    first = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a(), key_b()])
    second = sign(PAYLOAD_TYPE_INTOTO, b"{}", [SigningKey.from_seed(SEED_A), SigningKey.from_seed(SEED_B)])
    assert first.model_dump_json() == second.model_dump_json()


def test_tampered_payload_fails() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b'{"verdict":"fail"}', [key_a()])
    forged = env.model_copy(update={"payload": base64.b64encode(b'{"verdict":"pass"}').decode()})
    result = verify(forged, trusted(key_a()))
    assert not result.ok
    assert result.error == "bad-signature"
    assert result.statement is None


def test_tampered_payload_type_fails_even_when_accepting_any_type() -> None:
    env = sign("application/x-a", b"{}", [key_a()])
    forged = env.model_copy(update={"payloadType": "application/x-b"})
    assert verify(forged, trusted(key_a()), payload_type=None).error == "bad-signature"


def test_wrong_key_fails() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a()])
    # key_b is trusted under key_a's keyid: the hint finds it, the signature does not verify.
    result = verify(env, {key_a().keyid: key_b().verify_key})
    assert result.error == "bad-signature"


def test_unknown_keyid_but_trusted_key_verifies() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a()])
    renamed = env.model_copy(
        update={"signatures": [env.signatures[0].model_copy(update={"keyid": "not-a-known-keyid"})]}
    )
    result = verify(renamed, trusted(key_b(), key_a()))
    assert result.ok
    # The reported keyid is the trusted key's own, never the claim.
    assert result.keyid == key_a().keyid


def test_unknown_keyid_and_no_key_verifies() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a()])
    assert verify(env, trusted(key_b())).error == "unknown-keyid"
    assert verify(env, {}).error == "unknown-keyid"


def test_rotation_any_trusted_signature_suffices() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a(), key_b()])
    assert verify(env, trusted(key_b())).keyid == key_b().keyid
    assert verify(env, trusted(key_a())).keyid == key_a().keyid


def test_payload_type_mismatch() -> None:
    env = sign("text/plain", b"hi", [key_a()])
    assert verify(env, trusted(key_a())).error == "payload-type"
    assert verify(env, trusted(key_a()), payload_type="text/plain").error == "malformed"  # not JSON


@pytest.mark.parametrize(
    "raw",
    [
        {"payloadType": PAYLOAD_TYPE_INTOTO, "payload": "e30=", "signatures": []},
        {"payloadType": PAYLOAD_TYPE_INTOTO, "payload": "***", "signatures": [{"keyid": "", "sig": "AA=="}]},
        {"payloadType": PAYLOAD_TYPE_INTOTO, "payload": "e30="},
        {"payload": "e30=", "signatures": []},
        "not an object",
    ],
)
def test_malformed_envelopes(raw: object) -> None:
    assert verify(raw, trusted(key_a())).error == "malformed"  # type: ignore[arg-type]


def test_garbage_signature_is_not_malformed_envelope() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [key_a()])
    bad = env.model_copy(update={"signatures": [env.signatures[0].model_copy(update={"sig": "%%%"})]})
    assert verify(bad, trusted(key_a())).error == "bad-signature"


def test_accepts_mapping_and_url_safe_base64() -> None:
    env = sign(PAYLOAD_TYPE_INTOTO, b'{"k":"~~~???>>>"}', [key_a()])
    raw = json.loads(env.model_dump_json())
    raw["payload"] = raw["payload"].replace("+", "-").replace("/", "_")
    assert raw["payload"] != env.payload
    assert verify(raw, trusted(key_a())).ok


@settings(max_examples=60, deadline=None)
@given(payload_type=st.text(max_size=40), body=st.binary(max_size=300), flip=st.integers(min_value=0))
def test_round_trip_property(payload_type: str, body: bytes, flip: int) -> None:
    env = sign(payload_type, body, [key_a()])
    again = SignedEnvelope.model_validate_json(env.model_dump_json())
    result = verify(again, trusted(key_a()), payload_type=None)
    if result.ok:
        assert base64.b64decode(again.payload) == body
    else:
        assert result.error == "malformed"  # a body that is not JSON
    assert _check_sig_only(again)
    if body:
        index = flip % len(body)
        tampered = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
        forged = again.model_copy(update={"payload": base64.b64encode(tampered).decode()})
        assert verify(forged, trusted(key_a()), payload_type=None).error == "bad-signature"


def _check_sig_only(env: SignedEnvelope) -> bool:
    message = pae(env.payloadType, base64.b64decode(env.payload))
    key_a().verify_key.verify(message, base64.b64decode(env.signatures[0].sig))
    return True


# ---------------------------------------------------------------- statements


def test_job_statement_shape_and_determinism() -> None:
    statement = build_statement(job_result())
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_JOB_COMPLETED
    assert statement["subject"] == [{"name": DIGEST, "digest": {"sha256": "ab" * 32}}]
    assert statement["predicate"]["schema"] == "scheduler.job-result@1"
    payload = statement_bytes(job_result())
    assert payload == statement_bytes(job_result())
    assert json.loads(payload) == statement
    assert b" " not in payload.replace(b"DSSEv1 ", b"")  # canonical: no insignificant white space
    event, env = sign_completion(job_result(), [key_a()])
    assert event == event_id(payload)
    assert verify(env, trusted(key_a())).statement == statement
    assert sign_completion(job_result(), [key_a()]) == (event, env)


def test_run_and_breach_statements() -> None:
    run = RunEvent(run_id="run-7", tenant="acme", state="completed", at=T0)
    statement = build_statement(run)
    assert statement["predicateType"] == PREDICATE_RUN_COMPLETED
    assert statement["subject"] == [run_subject("run-7")]
    assert len(statement["subject"][0]["digest"]["sha256"]) == 64
    breach = SlaBreach(
        job_id="j",
        run_id="r",
        tenant="t",
        image_digest=DIGEST,
        priority="high",
        deadline=T0,
        at=T0,
        reason="x",
    )
    assert build_statement(breach)["predicateType"] == PREDICATE_SLA_BREACH


def test_image_subject_rejects_non_digests() -> None:
    with pytest.raises(ValueError, match="digest"):
        image_subject("nginx:latest")


def test_floats_are_refused_in_payloads() -> None:
    from schemas.canonical import dumps

    with pytest.raises(CanonicalError):
        dumps({"predicate": {"score": 9.8}})


# ---------------------------------------------------------------- keys


def test_generate_and_load_key_files(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "k" / "private.json", tmp_path / "keys" / "a.json")
    private = tmp_path / "k" / "private.json"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert not [p for p in private.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = load_signing_key(private)
    assert loaded.keyid == key.keyid
    assert load_public_keys(tmp_path / "keys" / "a.json") == {key.keyid: key.verify_key}
    other = generate_keypair(tmp_path / "k" / "private2.json", tmp_path / "keys" / "b.json")
    folder = load_public_keys(tmp_path / "keys")
    assert set(folder) == {key.keyid, other.keyid}
    env = sign(PAYLOAD_TYPE_INTOTO, b"{}", [loaded])
    assert verify(env, folder).ok


def test_public_key_set_file_formats(tmp_path: Path) -> None:
    docs = [public_key_document(key_a().verify_key), public_key_document(key_b().verify_key)]
    (tmp_path / "list.json").write_text(json.dumps(docs))
    (tmp_path / "set.json").write_text(json.dumps({"keys": docs}))
    expected = {key_a().keyid: key_a().verify_key, key_b().keyid: key_b().verify_key}
    assert load_public_keys(tmp_path / "list.json") == expected
    assert load_public_keys(tmp_path / "set.json") == expected


def test_public_key_with_wrong_keyid_is_refused(tmp_path: Path) -> None:
    doc = public_key_document(key_a().verify_key) | {"keyid": key_b().keyid}
    (tmp_path / "k.json").write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="keyid"):
        load_public_keys(tmp_path / "k.json")


def test_private_key_in_trust_folder_is_refused(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "private.json", tmp_path / "public.json")
    with pytest.raises(KeyFileError, match="private"):
        load_public_keys(tmp_path)


def test_signing_key_from_env() -> None:
    env = {ENV_VAR: base64.b64encode(SEED_A).decode()}
    assert load_signing_key(env=env).keyid == key_a().keyid
    with pytest.raises(KeyFileError):
        load_signing_key(env={})
    with pytest.raises(KeyFileError) as info:
        load_signing_key(env={ENV_VAR: base64.b64encode(b"short").decode()})
    assert base64.b64encode(b"short").decode() not in str(info.value)


def test_key_material_never_in_repr_or_errors(tmp_path: Path) -> None:
    key = key_a()
    secret = base64.b64encode(SEED_A).decode()
    assert secret not in repr(key)
    assert secret not in str(key)
    assert SEED_A.hex() not in repr(key)
    assert "redacted" in repr(key)
    broken = tmp_path / "broken.json"
    broken.write_text('{"seed": "' + secret[:-4] + '!!!!"}')
    with pytest.raises(KeyFileError) as info:
        load_signing_key(broken)
    assert secret[:-4] not in str(info.value)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_env_default_is_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, base64.b64encode(SEED_B).decode())
    assert load_signing_key().keyid == key_b().keyid
    assert os.environ[ENV_VAR]
