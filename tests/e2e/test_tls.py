"""TLS migration between two qmpd processes, with certificates made here by openssl.

The specification: ``-object tls-creds-x509`` and ``object-add``/``object-del`` answer with
QEMU 7.2's texts; a migration with matching credentials completes and the guest's output
continues; every bad-credential case (wrong CA, wrong host name, missing files, a plain
peer against a TLS peer, both ways) fails the source with a clear ``error-desc`` (QEMU's
words where QEMU has them, checked against a real QEMU 7.2 by hand:
qemu-colo-facts-style probes in the commit message), while the destination applied
nothing: it is still ``inmigrate`` and still listening, and a good source then succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from qmpd.testing.certs import CertAuthority, make_ca, make_creds_dir, openssl_available
from qmpd.testing.harness import QmpdProcess, SerialReader, check_stream, joined_stream

from .conftest import ACCELS

pytestmark = pytest.mark.skipif(not openssl_available(), reason="openssl is not installed")

GUEST = "counter,wss=8M,dirty=64,pace=20000"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("pki")
    ca: CertAuthority = make_ca(root / "ca")
    other = make_ca(root / "other-ca", "another CA")
    missing = root / "missing"
    missing.mkdir()
    yield {"good": make_creds_dir(root / "good", ca),
           "other": make_creds_dir(root / "other", other),
           "missing": missing}


async def _node(wd: Path, name: str, *extra: str) -> QmpdProcess:
    return await QmpdProcess.start(name, wd, guest=GUEST, extra=["-accel", ACCELS[0], *extra])


async def _refused(node: QmpdProcess, name: str, args: dict[str, object]) -> dict[str, object]:
    """The error reply of a command that must fail."""
    with pytest.raises(ExecuteError) as info:
        await node.qmp.execute(name, args)
    return {"error": {"class": info.value.error_class, "desc": str(info.value)}}


def _creds(d: Path, endpoint: str) -> list[str]:
    return ["-object", f"tls-creds-x509,id=tls0,dir={d},endpoint={endpoint}"]


async def _wait_final(node: QmpdProcess, timeout: float = 60.0) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result: dict[str, object] = await node.cmd("query-migrate")
        if result.get("status") in ("completed", "failed"):
            return result
        assert asyncio.get_running_loop().time() < deadline, result
        await asyncio.sleep(0.05)


async def test_object_add_and_del_texts(wd: Path, pki: dict[str, Path]) -> None:
    node = await _node(wd, "objs")
    try:
        cases = [
            ({"qom-type": "tls-creds-x509", "id": "t0"}, "Missing 'dir' property value"),
            ({"qom-type": "tls-creds-x509", "id": "t1", "dir": str(pki["missing"]),
              "endpoint": "server"},
             f"Unable to access credentials {pki['missing']}/ca-cert.pem: "
             "No such file or directory"),
            ({"qom-type": "tls-creds-x509", "id": "t2", "dir": "/x", "endpoint": "bogus"},
             "Parameter 'endpoint' does not accept value 'bogus'"),
            ({"qom-type": "tls-creds-x509", "id": "t3", "dir": "/x", "bogus": 1},
             "Parameter 'bogus' is unexpected"),
            ({"qom-type": "tls-creds-bogus", "id": "t4"},
             "Parameter 'qom-type' does not accept value 'tls-creds-bogus'"),
            ({"qom-type": "tls-creds-x509"}, "Parameter 'id' is missing"),
        ]
        for args, text in cases:
            reply = await _refused(node, "object-add", args)
            assert reply["error"] == {"class": "GenericError", "desc": text}, args
        good = {"qom-type": "tls-creds-x509", "id": "t5", "dir": str(pki["good"]),
                "endpoint": "server"}
        assert await node.cmd("object-add", **good) == {}
        reply = await _refused(node, "object-add", good)
        assert reply["error"]["desc"] == ("attempt to add duplicate property 't5' to object "
                                          "(type 'container')")
        assert await node.cmd("object-del", id="t5") == {}
        reply = await _refused(node, "object-del", {"id": "t5"})
        assert reply["error"] == {"class": "GenericError", "desc": "object 't5' not found"}
    finally:
        await node.close()


async def test_object_on_the_command_line_with_missing_files_exits(
        wd: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match=r"Unable to access credentials .*ca-cert.pem: "
                                           "No such file or directory"):
        await _node(wd, "bad", *_creds(pki["missing"], "server"))


async def _pair(wd: Path, src_creds: Path | None, dst_creds: Path | None,
                hostname: str | None = "localhost",
                defer_listen: bool = False) -> tuple[QmpdProcess, QmpdProcess]:
    dst = await _node(wd, "dst", "-incoming", "defer",
                      *(_creds(dst_creds, "server") if dst_creds else []))
    src = await _node(wd, "src", *(_creds(src_creds, "client") if src_creds else []))
    if dst_creds:
        await dst.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
    if src_creds:
        params = {"tls-creds": "tls0"} | ({"tls-hostname": hostname} if hostname else {})
        await src.cmd("migrate-set-parameters", **params)
    if not defer_listen:
        await dst.cmd("migrate-incoming", uri=f"unix:{wd / 'mig.sock'}")
    return src, dst


async def _migrate(src: QmpdProcess, wd: Path) -> dict[str, object]:
    await src.cmd("migrate", uri=f"unix:{wd / 'mig.sock'}")
    return await _wait_final(src)


async def _migrate_and_check_output(src: QmpdProcess, dst: QmpdProcess, wd: Path) -> None:
    """Migrate; the destination runs on and its output continues the source's exactly."""
    out, dst_out = SerialReader(src.serial_path), SerialReader(dst.serial_path)
    await out.start()
    await dst_out.start()
    try:
        await out.wait_lines(10)
        result = await _migrate(src, wd)
        assert result["status"] == "completed", result
        await dst_out.wait_lines(20)
        assert (await dst.cmd("query-status"))["status"] == "running"
        report = check_stream(joined_stream(out, dst_out), GUEST)
        assert report.ok, report
    finally:
        await out.close()
        await dst_out.close()


async def _assert_untouched_then_good_source_works(wd: Path, dst: QmpdProcess,
                                                   good: Path) -> None:
    """Nothing was applied: the destination is still inmigrate and listening."""
    assert (await dst.cmd("query-status"))["status"] == "inmigrate"
    assert (await dst.cmd("query-migrate"))["socket-address"][0]["path"] == str(wd / "mig.sock")
    src2 = await _node(wd, "src2", *_creds(good, "client"))
    try:
        await src2.cmd("migrate-set-parameters",
                       **{"tls-creds": "tls0", "tls-hostname": "localhost"})
        await _migrate_and_check_output(src2, dst, wd)
    finally:
        await src2.close()


async def test_tls_migration_completes_and_output_continues(
        wd: Path, pki: dict[str, Path]) -> None:
    src, dst = await _pair(wd, pki["good"], pki["good"])
    try:
        await _migrate_and_check_output(src, dst, wd)
    finally:
        await src.close()
        await dst.close()


BAD = {
    "wrong-ca": ("other", "good", "localhost", "The certificate hasn't got a known issuer"),
    "wrong-hostname": ("good", "good", "wrong.example",
                       "Certificate does not match the hostname wrong.example"),
    "no-hostname-over-unix": ("good", "good", None, "No hostname for certificate validation"),
    "plain-source-tls-destination": (None, "good", None,
                                     "TLS handshake failed: An unexpected TLS packet was "
                                     "received. (this destination expects TLS: tls-creds)"),
    "tls-source-plain-destination": ("good", None, "localhost",
                                     "TLS handshake failed: An unexpected TLS packet "
                                     "was received."),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_credentials_fail_cleanly(wd: Path, pki: dict[str, Path], case: str) -> None:
    src_key, dst_key, hostname, text = BAD[case]
    src, dst = await _pair(wd, pki[src_key] if src_key else None,
                           pki[dst_key] if dst_key else None, hostname)
    try:
        result = await _migrate(src, wd)
        assert result["status"] == "failed", result
        if text is not None:
            assert result["error-desc"] == text
        else:
            assert result["error-desc"], result
        assert src.proc.returncode is None and dst.proc.returncode is None
        assert (await src.cmd("query-status"))["status"] == "running"
        assert (await dst.cmd("query-status"))["status"] == "inmigrate"
        if dst_key is not None:
            await _assert_untouched_then_good_source_works(wd, dst, pki["good"])
        else:
            # a plain destination read the TLS hello as a stream: refused, retry possible
            final = await dst.cmd("query-migrate")
            assert final["status"] == "failed", final
    finally:
        await src.close()
        await dst.close()


async def test_tls_creds_naming_no_object_or_the_wrong_endpoint(
        wd: Path, pki: dict[str, Path]) -> None:
    """QEMU 7.2's texts (migration/tls.c, crypto/tlscreds.c); the source runs on and the
    destination, untouched, then takes a good source."""
    src, dst = await _pair(wd, None, pki["good"])
    try:
        await src.cmd("migrate-set-parameters", **{"tls-creds": "missing"})
        result = await _migrate(src, wd)
        assert (result["status"], result["error-desc"]) == (
            "failed", "No TLS credentials with id 'missing'")
        await src.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "srv",
                                       "dir": str(pki["good"]), "endpoint": "server"})
        await src.cmd("migrate-set-parameters", **{"tls-creds": "srv"})
        result = await _migrate(src, wd)
        assert (result["status"], result["error-desc"]) == (
            "failed", "Expected TLS credentials for a client endpoint")
        assert (await src.cmd("query-status"))["status"] == "running"
        await _assert_untouched_then_good_source_works(wd, dst, pki["good"])
    finally:
        await src.close()
        await dst.close()


async def test_tls_authz_is_refused(wd: Path, pki: dict[str, Path]) -> None:
    """qmpd has no authorization objects: a TLS destination with tls-authz set fails its
    incoming migration with that said, before reading anything; both stay up."""
    src, dst = await _pair(wd, pki["good"], pki["good"], defer_listen=True)
    try:
        await dst.cmd("migrate-set-parameters", **{"tls-authz": "authz0"})
        await dst.cmd("migrate-incoming", uri=f"unix:{wd / 'mig.sock'}")
        final = await _wait_final(dst)
        assert final == {"status": "failed", "error-desc":
                         "tls-authz (authorization objects) is not supported by qmpd"}
        assert (await dst.cmd("query-status"))["status"] == "inmigrate"
    finally:
        await src.close()
        await dst.close()
