"""The BTF reader against bpftool, an independent implementation, on this kernel."""

import re
import shutil
import subprocess

import pytest

from agent.kernel.btf import BTF, KIND_FUNC, KIND_STRUCT

pytestmark = pytest.mark.skipif(shutil.which("bpftool") is None, reason="needs bpftool (scripts/setup.sh)")


@pytest.fixture(scope="module")
def btf():
    return BTF.vmlinux()


def _bpftool_raw(btf_id_filter: str) -> str:
    out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    return out


def test_func_id_matches_bpftool(btf):
    out = _bpftool_raw("tcp_connect")
    m = re.search(r"^\[(\d+)\] FUNC 'tcp_connect'", out, re.M)
    assert m, "bpftool shows no FUNC tcp_connect"
    assert btf.find(KIND_FUNC, "tcp_connect").type_id == int(m.group(1))


@pytest.mark.parametrize("struct,member", [("tcp_sock", "srtt_us"), ("sock", "sk_err"), ("sock", "sk_sndbuf"), ("tcp_sock", "snd_cwnd")])
def test_member_offsets_match_bpftool(btf, struct, member):
    out = _bpftool_raw(struct)
    block = re.search(rf"^\[\d+\] STRUCT '{struct}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M)
    assert block, f"bpftool shows no struct {struct}"
    m = re.search(rf"^\t'{member}' type_id=\d+ bits_offset=(\d+)", block.group(1), re.M)
    assert m, f"bpftool shows no {struct}.{member}"
    assert btf.member_offset(struct, member) == int(m.group(1)) // 8


def test_headers_would_be_wrong_here(btf):
    """KERNEL-FACTS: the 6.1 headers put sock.sk_err at 544; this kernel does not."""
    assert btf.find(KIND_STRUCT, "sock") is not None
    assert btf.member_offset("sock", "sk_err") != 544


@pytest.mark.parametrize("struct,member", [("sock_common", "skc_daddr"), ("sock_common", "skc_dport"),
                                           ("sock_common", "skc_v6_daddr")])
def test_members_inside_anonymous_unions_match_bpftool(btf, struct, member):
    """skc_daddr sits in an anonymous struct in an anonymous union: the
    offset is the sum of the outer members' and its own."""
    out = _bpftool_raw(struct)
    block = re.search(rf"^\[\d+\] STRUCT '{struct}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M).group(1)
    types = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\[(\d+)\] (.*(?:\n\t.*)*)", out, re.M)}

    def find(body: str, base: int):
        for m in re.finditer(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)", body, re.M):
            name, tid, bits = m.group(1), int(m.group(2)), base + int(m.group(3))
            if name == member:
                return bits
            if name == "(anon)" and re.match(r"(STRUCT|UNION) '\(anon\)'", types[tid]):
                found = find(types[tid] + "\n", bits)
                if found is not None:
                    return found
        return None

    assert btf.member_offset(struct, member) == find(block, 0) // 8


@pytest.mark.parametrize("tracepoint", ["inet_sock_set_state", "tcp_destroy_sock", "sock_send_length"])
def test_raw_tracepoint_arguments_match_bpftool(btf, tracepoint):
    out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^typedef void \(\*btf_trace_{tracepoint}\)\(void \*, (.*)\);$", out, re.M)
    assert m, f"bpftool shows no btf_trace_{tracepoint}"
    want = [re.sub(r"^const ", "", a) for a in m.group(1).split(", ")]  # qualifiers are skipped
    assert btf.raw_tracepoint_args(tracepoint) == want


def test_bitfield_offset_and_width_match_bpftool(btf):
    out = _bpftool_raw("tcp_sock")
    block = re.search(r"^\[\d+\] STRUCT 'tcp_sock' size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M)
    m = re.search(r"^\t'nonagle' type_id=\d+ bits_offset=(\d+) bitfield_size=(\d+)", block.group(1), re.M)
    assert m, "bpftool shows no bitfield tcp_sock.nonagle"
    assert btf.member_bitfield("tcp_sock", "nonagle") == (int(m.group(1)), int(m.group(2)))


def test_enum_value_matches_bpftool(btf):
    out = _bpftool_raw("sock_flags")
    block = re.search(r"^\[\d+\] ENUM 'sock_flags' encoding=\w+ size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M)
    m = re.search(r"^\t'SOCK_KEEPOPEN' val=(\d+)", block.group(1), re.M)
    assert m, "bpftool shows no SOCK_KEEPOPEN"
    assert btf.enum_value("sock_flags", "SOCK_KEEPOPEN") == int(m.group(1))
