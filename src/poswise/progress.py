"""Training progress that tells the time: epoch, loss, epochs/s and ETA.

A :class:`Progress` has the interface a trainer's ``fit(progress=...)`` drives:
``update(epoch, loss)`` after every epoch (epoch 0 before training) and ``close()`` at the
end. Three displays:

* ``"bar"``: a live display redrawn in place, through tqdm when it is installed, else a
  built-in one-line bar; what a terminal gets;
* ``"heartbeat"``: one full line every ``heartbeat`` seconds and none in between; what a
  log file or a job scheduler gets (a redrawn line would be one unreadable line there);
* ``"off"``.

``mode="auto"`` picks ``"bar"`` when the stream is a terminal, else ``"heartbeat"``.

The ETA to the epoch budget comes from the mean speed since the first update. The ETA to
a target loss is estimated from the recent slope of log(loss) against epochs (a loss that
falls geometrically is a straight line there) and only shown while the loss falls and the
estimate is within the budget.
"""
import math
import sys
import time

__all__ = ["Progress", "MODES", "HEARTBEAT_SECONDS", "format_seconds"]

MODES = ("auto", "bar", "heartbeat", "off")
#: Default seconds between two heartbeat lines.
HEARTBEAT_SECONDS = 10.0
# Redraws of a live display at most this often (seconds).
_REDRAW = 0.1
# Epochs remembered for the slope estimate of the target ETA.
_WINDOW = 50


def format_seconds(s):
    """``s`` seconds as "42 s", "3 min 05 s" or "2 h 07 min"."""
    if s is None or not math.isfinite(s):
        return "?"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _size(stream):
    """(columns, lines) of the terminal behind ``stream``, (0, 0) if unknown."""
    try:
        import os
        return tuple(os.get_terminal_size(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return 0, 0


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Progress of one training run.

    Parameters
    ----------
    total : int
        The epoch budget (``max_epochs``).
    label : str, default ""
        Shown first on each line (e.g. "PWO + Adam, lr 0.01").
    target : float, optional
        The target loss, for the ETA to it.
    mode : {"auto", "bar", "heartbeat", "off"}, default "auto"
    stream : file-like, optional
        Default ``sys.stderr``.
    heartbeat : float, optional
        Seconds between two heartbeat lines (default :data:`HEARTBEAT_SECONDS`).
    use_tqdm : bool or None, default None
        The bar through tqdm (None: when installed).
    clock : callable, optional
        Returns seconds (default ``time.perf_counter``; tests pass a fake one).
    """

    def __init__(self, total, *, label="", target=None, mode="auto", stream=None,
                 heartbeat=None, use_tqdm=None, clock=None):
        if mode not in MODES:
            raise ValueError(f"The 'mode' parameter of Progress must be one of "
                             f"{', '.join(MODES)}. Got {mode!r} instead.")
        if heartbeat is None:
            heartbeat = HEARTBEAT_SECONDS
        if not (isinstance(heartbeat, (int, float)) and heartbeat > 0):
            raise ValueError(f"The 'heartbeat' parameter of Progress must be a number > 0."
                             f" Got {heartbeat!r} instead.")
        self.total = int(total)
        self.label = label
        self.target = target
        self.stream = sys.stderr if stream is None else stream
        self.heartbeat = float(heartbeat)
        self.clock = clock or time.perf_counter
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "heartbeat"
        self.mode = mode
        # tqdm draws its bar when created: it is created at the first update, so that
        # what the caller prints before training comes first.
        self._tqdm = _tqdm() if (use_tqdm is None or use_tqdm) and mode == "bar" else None
        self._bar = None
        self._start = None        # (time, epoch) of the first update
        self._last_draw = -math.inf
        self._drawn = False
        self._recent = []         # (epoch, loss) of the last _WINDOW updates
        self.epoch, self.loss = 0, math.nan
        self._closed = False

    def _new_bar(self):
        tqdm = self._tqdm
        if tqdm is not None:
            # A terminal that reports no size (some ptys, e.g. under `script`) would make
            # tqdm draw nothing: it hides bars below the screen's last line.
            cols, rows = _size(self.stream)
            sized = cols > 0 and rows > 0
            self._bar = tqdm(total=self.total, desc=self.label or None, unit="epoch",
                             file=self.stream, leave=True, dynamic_ncols=sized,
                             ncols=None if sized else 100, nrows=None if sized else 24,
                             initial=self.epoch)

    # ---------------------------------------------------------------- estimates
    def rate(self):
        """Epochs per second since the first update (None before two updates)."""
        if self._start is None:
            return None
        t0, e0 = self._start
        dt, de = self.clock() - t0, self.epoch - e0
        return de / dt if de > 0 and dt > 0 else None

    def eta(self):
        """Seconds left to ``total`` epochs at the mean speed (None if unknown)."""
        r = self.rate()
        return None if r is None else max(0, self.total - self.epoch) / r

    def eta_target(self):
        """Seconds until the loss falls below ``target``, from the recent slope of
        log(loss); None without a target, while the loss does not fall, or when the
        estimate is beyond the budget."""
        r = self.rate()
        if self.target is None or self.target <= 0 or r is None or len(self._recent) < 5:
            return None
        (e0, l0), (e1, l1) = self._recent[0], self._recent[-1]
        if not (l0 > 0 and l1 > 0 and e1 > e0 and math.isfinite(l0) and math.isfinite(l1)):
            return None
        if l1 < self.target:
            return 0.0
        slope = (math.log(l0) - math.log(l1)) / (e1 - e0)     # per epoch, > 0 if falling
        if slope <= 0:
            return None
        epochs = (math.log(l1) - math.log(self.target)) / slope
        if epochs > self.total - self.epoch:
            return None
        return epochs / r

    # ---------------------------------------------------------------- display
    def _text(self, final=False):
        parts = [self.label] if self.label and self._bar is None else []
        if self._bar is None:
            parts.append(f"epoch {self.epoch}/{self.total}")
        parts.append(f"loss {self.loss:.5g}")
        r = self.rate()
        if self._bar is None and r is not None:
            parts.append(f"{r:.3g} epochs/s")
        if not final:
            if self._bar is None and r is not None:
                parts.append(f"ETA {format_seconds(self.eta())}")
            et = self.eta_target()
            if et:              # None: no estimate; 0: already below the target
                parts.append(f"target in ~{format_seconds(et)}")
        return "  ".join(parts)

    def _write(self, text, newline):
        try:
            if newline:
                self.stream.write(text + "\n")
            else:
                self.stream.write("\r" + text + "\033[K")
            self.stream.flush()
        except (OSError, ValueError):     # closed or broken stream: progress is optional
            self.mode = "off"

    def update(self, epoch, loss, force=False):
        """Record ``loss`` after ``epoch`` epochs and redraw when it is time to (or now,
        with ``force`` on a live display)."""
        if self._closed:
            return
        now = self.clock()
        if self._start is None:
            self._start = (now, epoch)
            self._last_draw = now
            self.epoch = int(epoch)
            if self.mode == "bar" and self._tqdm is not None:
                self._new_bar()
        self.epoch, self.loss = int(epoch), float(loss)
        self._recent.append((self.epoch, self.loss))
        if len(self._recent) > _WINDOW:
            del self._recent[0]
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.n = self.epoch
            if force or now - self._last_draw >= _REDRAW:
                self._last_draw = now
                self._bar.set_postfix_str(self._text(), refresh=False)
                self._bar.refresh()
            return
        if self.mode == "bar":
            if force or now - self._last_draw >= _REDRAW or epoch >= self.total:
                self._last_draw = now
                self._drawn = True
                self._write(self._text(), newline=False)
        elif now - self._last_draw >= self.heartbeat:
            self._last_draw = now
            self._write(self._text(), newline=True)

    def close(self):
        """End the display (a live line is finished with a newline)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.n = self.epoch
            self._bar.set_postfix_str(self._text(final=True), refresh=False)
            self._bar.close()
        elif self.mode == "bar" and self._drawn:
            self._write(self._text(final=True), newline=False)
            self._write("", newline=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
