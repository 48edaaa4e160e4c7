"""`<tpm>`: a TPM 1.2 or 2.0 in front of swtpm, libvirt 9.0's element. QEMU arguments:
`tapvirt.qemu.argv.tpm`.

Backends: `emulator` (libvirt runs swtpm for the guest; tapvirt builds the same command
line, with swtpm's control socket in the guest's runtime directory — starting swtpm is
the launcher's job) and `external` (a swtpm you run yourself, reached by a UNIX socket).
`passthrough` hands the host's /dev/tpm0 to the guest, which needs root: refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from tapvirt.conf import errors as E
from tapvirt.errors import define

if TYPE_CHECKING:
    from lxml import etree

    from tapvirt.conf.xml import Reader

TPM_UNSUPPORTED = define(
    "tpm-unsupported",
    "a <tpm> backend or option that needs root or host secrets (passthrough, encryption, "
    "PCR banks)", layer="conf",
)


class TpmModel(StrEnum):
    TIS = "tpm-tis"  # libvirt's default on x86
    CRB = "tpm-crb"  # TPM 2.0 only


class TpmBackend(StrEnum):
    EMULATOR = "emulator"
    EXTERNAL = "external"


class TpmVersion(StrEnum):
    V1_2 = "1.2"
    V2_0 = "2.0"


@dataclass(frozen=True)
class Tpm:
    model: TpmModel = TpmModel.TIS
    backend: TpmBackend = TpmBackend.EMULATOR
    version: TpmVersion | None = TpmVersion.V2_0  # emulator only
    persistent_state: bool = False  # emulator: keep the state after undefine
    socket: str | None = None  # external: swtpm's UNIX socket
    alias: str | None = "tpm0"


def parse_tpm(p: Reader, el: etree._Element) -> Tpm:
    from tapvirt.conf.devices.common import parse_alias as _alias

    found = p.shape(el, ("model",), ("backend", "alias"), multi=("backend",))
    if el.get("model") in ("tpm-spapr", "spapr-tpm-proxy"):
        raise p.fail(
            E.INVALID_VALUE, el, f"TPM model '{el.get('model')}' exists only on ppc64",
            "use model='tpm-crb' or model='tpm-tis'", attr="model",
        )
    model = p.enum(el, "model", TpmModel) if el.get("model") is not None else TpmModel.TIS
    backends = found.get("backend", [])
    if len(backends) > 1:
        raise p.fail(E.DUPLICATE_ELEMENT, backends[1], "only one TPM backend is supported",
                     "keep one <backend>")
    if not backends:
        raise p.fail(E.MISSING_ELEMENT, el, "missing TPM device backend",
                     "add <backend type='emulator' version='2.0'/>")
    b = backends[0]
    if b.get("type") == "passthrough":
        raise p.fail(
            TPM_UNSUPPORTED, b, "a passthrough TPM gives the guest the host's /dev/tpm0, "
            "which only root can open", "use <backend type='emulator' version='2.0'/>",
            attr="type",
        )
    if b.get("type") is None:
        p.shape(b, ("type",), required_attrs=("type",))
    btype = p.enum(b, "type", TpmBackend)
    if btype is TpmBackend.EXTERNAL:
        bf = p.shape(b, ("type",), ("source",))
        s = p.need(bf, "source", b)
        p.shape(s, ("type", "mode", "path"), required_attrs=("type", "path"))
        if s.get("type") != "unix" or s.get("mode", "connect") != "connect":
            raise p.fail(
                E.INVALID_VALUE, s, "an external TPM is reached by connecting to a UNIX socket",
                "write <source type='unix' mode='connect' path='/run/.../swtpm.sock'/>",
            )
        return Tpm(model, btype, None, False, p.abspath(s, "path", s.get("path", "")),
                   _alias(p, p.one(found, "alias"), "tpm0"))
    bf = p.shape(b, ("type", "version", "persistent_state"),
                 ("encryption", "active_pcr_banks"))
    for tag in ("encryption", "active_pcr_banks"):
        if (c := p.one(bf, tag)) is not None:
            raise p.fail(
                TPM_UNSUPPORTED, c, f"<{tag}> of an emulated TPM needs libvirt's secret store "
                "or swtpm_setup options tapvirt does not pass", f"remove <{tag}>",
            )
    version = None
    if b.get("version") is not None:
        version = p.enum(b, "version", TpmVersion)
    # libvirt's qemuDomainTPMDefPostParse: CRB is TPM 2.0; a TIS without version is 1.2
    if version is None:
        version = TpmVersion.V2_0 if model is TpmModel.CRB else TpmVersion.V1_2
    if model is TpmModel.CRB and version is TpmVersion.V1_2:
        raise p.fail(
            E.INVALID_VALUE, b, "Unsupported interface 'tpm-crb' for TPM 1.2",
            "use version='2.0' or model='tpm-tis'", attr="version",
        )
    persistent = False
    if b.get("persistent_state") is not None:
        raw = b.get("persistent_state")
        if raw not in ("yes", "no"):
            raise p.fail(
                E.INVALID_VALUE, b, "Invalid persistent_state value, either 'yes' or 'no'",
                "write persistent_state='yes' or 'no'", attr="persistent_state",
            )
        persistent = raw == "yes"
    return Tpm(model, btype, version, persistent, None,
               _alias(p, p.one(found, "alias"), "tpm0"))


def format_tpm(t: Tpm, ind: str, live: bool) -> list[str]:
    from tapvirt.conf.devices.misc import _alias_lines
    from tapvirt.conf.xmlout import a as _a
    from tapvirt.conf.xmlout import attrs as _attrs

    out = [f"{ind}<tpm model={_a(t.model)}>"]
    if t.backend is TpmBackend.EXTERNAL:
        out += [f"{ind}  <backend type='external'>",
                f"{ind}    <source type='unix' mode='connect' path={_a(t.socket or '')}/>",
                f"{ind}  </backend>"]
    else:
        state = "yes" if t.persistent_state else None  # libvirt writes only 'yes'
        out.append(f"{ind}  <backend type='emulator'" + _attrs(
            version=t.version, persistent_state=state) + "/>")
    out += _alias_lines(t.alias, ind, live)
    out.append(f"{ind}</tpm>")
    return out
