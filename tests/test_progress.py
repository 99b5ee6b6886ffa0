"""Tests of poswise.progress: the numbers it shows and when it shows them."""
import io
import math

import pytest

from poswise.progress import Progress, format_seconds


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


def feed(p, clock, losses, dt):
    for e, loss in enumerate(losses):
        p.update(e, loss)
        clock.t += dt


def test_rate_and_eta_to_the_budget():
    clock, out = Clock(), io.StringIO()
    p = Progress(100, clock=clock, stream=out, mode="off")
    feed(p, clock, [1.0] * 21, 0.5)          # 20 epochs in 10 s (the last at t = 10)
    clock.t = 10.0
    assert p.rate() == pytest.approx(2.0)
    assert p.eta() == pytest.approx(80 / 2.0)
    assert out.getvalue() == ""              # off: nothing written


def test_eta_to_the_target_from_a_geometric_loss():
    clock = Clock()
    p = Progress(1000, target=1e-3, clock=clock, stream=io.StringIO(), mode="off")
    losses = [0.9 ** e for e in range(40)]
    feed(p, clock, losses, 0.1)
    clock.t = 3.9                            # 39 epochs in 3.9 s: 10 epochs/s
    # log(loss) falls by -log(0.9) per epoch: epochs left = log(l/target)/(-log 0.9).
    left = math.log(losses[-1] / 1e-3) / -math.log(0.9)
    assert p.eta_target() == pytest.approx(left / 10.0, rel=1e-9)


def test_no_target_eta_when_the_loss_does_not_fall_or_is_too_far():
    clock = Clock()
    p = Progress(1000, target=0.1, clock=clock, stream=io.StringIO(), mode="off")
    feed(p, clock, [1.0 + 0.01 * e for e in range(20)], 0.1)
    assert p.eta_target() is None            # rising
    p = Progress(30, target=1e-9, clock=clock, stream=io.StringIO(), mode="off")
    feed(p, clock, [0.99 ** e for e in range(20)], 0.1)
    assert p.eta_target() is None            # beyond the budget
    p = Progress(30, clock=clock, stream=io.StringIO(), mode="off")
    feed(p, clock, [0.5 ** e for e in range(20)], 0.1)
    assert p.eta_target() is None            # no target


def test_heartbeat_lines_off_a_terminal():
    clock, out = Clock(), io.StringIO()
    p = Progress(1000, label="PWO", target=0.01, clock=clock, stream=out, heartbeat=5.0)
    assert p.mode == "heartbeat"
    feed(p, clock, [0.95 ** e for e in range(100)], 0.125)    # 12.5 s
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2                   # at 5 s and at 10 s
    assert "\r" not in out.getvalue()
    assert lines[0].startswith(f"PWO  epoch 40/1000  loss {0.95 ** 40:.5g}  ")
    assert "8 epochs/s" in lines[0] and "ETA 2 min 00 s" in lines[0]
    assert lines[1].startswith("PWO  epoch 80/1000")
    assert "target in ~" in lines[0]


def test_live_line_on_a_terminal_without_tqdm():
    clock, out = Clock(), TTY()
    p = Progress(50, label="GD", clock=clock, stream=out, use_tqdm=False)
    assert p.mode == "bar"
    feed(p, clock, [1.0 / (e + 1) for e in range(51)], 0.05)
    p.close()
    text = out.getvalue()
    assert text.count("\r") >= 20 and text.endswith("\n")
    assert "epoch 50/50" in text


def test_tqdm_bar_when_installed():
    pytest.importorskip("tqdm")
    clock, out = Clock(), TTY()
    p = Progress(40, label="GD", target=0.01, clock=clock, stream=out, mode="bar")
    feed(p, clock, [0.9 ** e for e in range(41)], 0.2)
    p.close()
    text = out.getvalue()
    assert "GD" in text and "40/40" in text and "loss" in text


def test_forced_modes_and_errors():
    assert Progress(5, stream=TTY(), mode="heartbeat").mode == "heartbeat"
    assert Progress(5, stream=io.StringIO(), mode="bar", use_tqdm=False).mode == "bar"
    with pytest.raises(ValueError, match="'mode' parameter of Progress must be one of"):
        Progress(5, mode="loud")
    with pytest.raises(ValueError, match="'heartbeat' parameter of Progress"):
        Progress(5, heartbeat=0)


def test_a_closed_stream_turns_progress_off():
    out = io.StringIO()
    clock = Clock()
    p = Progress(10, stream=out, clock=clock, heartbeat=1.0)
    out.close()
    feed(p, clock, [1.0] * 5, 1.0)           # writes fail quietly
    assert p.mode == "off"
    p.close()


@pytest.mark.parametrize("s, text", [(3.21, "3.2 s"), (42, "42 s"), (125, "2 min 05 s"),
                                     (7260, "2 h 01 min"), (None, "?")])
def test_format_seconds(s, text):
    assert format_seconds(s) == text
