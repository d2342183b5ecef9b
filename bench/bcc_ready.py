"""Run a BCC tool so that its header line reaches the file as soon as it is ready.

    /usr/bin/python3 bench/bcc_ready.py /usr/sbin/tcplife-bpfcc [ARGS...]

BCC's tools print their header and then poll the perf buffer; with stdout on
a file, Python holds the header in its block buffer until kilobytes of events
follow, so the bench could not see when the tool was ready. This flushes
stdout once, at the first perf_buffer_poll() (programs attached, buffers open),
and changes nothing else: events stay block-buffered as they would be in
`tcplife-bpfcc > /dev/null`.
"""

import runpy
import sys

from bcc import BPF

_poll = BPF.perf_buffer_poll


def _first_poll(self, *args, **kwargs):
    BPF.perf_buffer_poll = _poll
    sys.stdout.flush()
    return _poll(self, *args, **kwargs)


BPF.perf_buffer_poll = _first_poll
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
