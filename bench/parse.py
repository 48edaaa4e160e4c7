"""Parse (and format) a 60-device domain: the definitions layer's cost per document.

Goal (issue 9): parsing a 60-device domain stays under 20 ms. The document also carries
the domain-level elements real tools write (metadata, clock, features, cpu, pm, sysinfo),
so the declaration machinery (`tapvirt.conf.decl`) is measured too. It is not a timed
test; run it by hand:

    python -m bench.parse [--rounds 50]

and it prints the median and the 90th percentile (wall) and the median CPU time of
parse_domain, format_domain and the unpickling of the cached model (what `tapvirt start`
does instead of parsing). CPU time is the number to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

UUID = "c7a5fdbd-edaf-9455-926a-d65c16db1809"


def sixty_device_domain() -> str:
    devices: list[str] = ["    <emulator>/usr/bin/qemu-system-x86_64</emulator>"]
    letters = [chr(ord("a") + i) for i in range(26)]
    for i in range(20):  # 12 virtio, 4 sata, 4 scsi disks
        if i < 12:
            dev, bus = f"vd{letters[i]}", "virtio"
        elif i < 16:
            dev, bus = f"sd{letters[i - 12]}", "sata"
        else:
            dev, bus = f"sd{letters[i - 12]}", "scsi"
        devices.append(
            f"    <disk type='file' device='disk'>\n"
            f"      <driver name='qemu' type='qcow2'/>\n"
            f"      <source file='/var/lib/images/disk{i}.qcow2'/>\n"
            f"      <target dev='{dev}' bus='{bus}'/>\n"
            f"    </disk>")
    for i in range(36):  # interfaces of every type
        kind = ("ethernet", "bridge", "user")[i % 3]
        extra = {"ethernet": f"      <target dev='tvtap{i}' managed='no'/>\n",
                 "bridge": "      <source bridge='br0'/>\n", "user": ""}[kind]
        devices.append(
            f"    <interface type='{kind}'>\n"
            f"      <mac address='52:54:00:00:00:{i:02x}'/>\n{extra}"
            f"      <model type='virtio'/>\n"
            f"    </interface>")
    for i in range(4):
        devices.append(f"    <serial type='pty'>\n      <target port='{i}'/>\n    </serial>")
    body = "\n".join(devices)
    return f"""<domain type='qemu'>
  <name>bench60</name>
  <uuid>{UUID}</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='GiB'>4</memory>
  <vcpu placement='static'>4</vcpu>
  <sysinfo type='smbios'>
    <system>
      <entry name='manufacturer'>KubeVirt</entry>
      <entry name='uuid'>{UUID}</entry>
    </system>
  </sysinfo>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <smbios mode='sysinfo'/>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='1' cores='4' threads='1'/>
  </cpu>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>
  <pm>
    <suspend-to-mem enabled='no'/>
    <suspend-to-disk enabled='no'/>
  </pm>
  <devices>
{body}
  </devices>
</domain>
"""


def _measure(fn: object, rounds: int) -> tuple[float, float, float]:
    """Median and p90 wall time, and median CPU time (the process's own: robust when
    other jobs share the cores), in ms."""
    assert callable(fn)
    wall, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    wall.sort()
    return statistics.median(wall), wall[int(len(wall) * 0.9) - 1], statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)

    from tapvirt.conf.format import format_domain
    from tapvirt.conf.parse import parse_domain

    text = sixty_device_domain()
    t0 = time.perf_counter()
    dom = parse_domain(text)  # the first parse loads lxml, the grammar, the declarations
    first = (time.perf_counter() - t0) * 1000
    n = len(dom.devices.disks) + len(dom.devices.interfaces) + len(dom.devices.serials)
    blob = pickle.dumps(dom, protocol=pickle.HIGHEST_PROTOCOL)
    rows = [
        ("parse_domain", _measure(lambda: parse_domain(text), args.rounds)),
        ("format_domain", _measure(lambda: format_domain(dom), args.rounds)),
        ("unpickle cached model", _measure(lambda: pickle.loads(blob), args.rounds)),  # noqa: S301
    ]
    print(f"{n}-device domain, {len(text)} bytes, {args.rounds} rounds "
          f"(first parse incl. imports: {first:.1f} ms)")
    for name, (median, p90, cpu) in rows:
        print(f"  {name:<24} median {median:6.2f} ms   p90 {p90:6.2f} ms   cpu {cpu:6.2f} ms")
    goal = rows[0][1][2] < 20.0
    print(f"goal parse < 20 ms (CPU time): {'met' if goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
