"""What a fit records: :class:`History`, and the warning of a diverged run."""
from dataclasses import dataclass, field

from ._json import json_clean

__all__ = ["History", "DivergenceWarning", "STOP_REASONS"]

STOP_REASONS = ("max_epochs", "target_reached", "callback", "diverged", "interrupted")


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss or a parameter became NaN or infinite."""


@dataclass
class History:
    """What happened during one ``fit``.

    Attributes
    ----------
    loss : list of float
        Training loss: entry 0 before training, entry i after i epochs (the same
        definition for every schedule; for mini-batch training, the full-data loss after
        the epoch's last step).
    val_loss, val_accuracy : list of float
        The same for ``validation_data`` (empty without it; accuracy is NaN for mse).
    seconds : list of float
        Cumulative wall time (``time.perf_counter``) after each entry of ``loss``, the
        set-up and the initial forward pass included, validation excluded.
    setup_seconds : float
        The part of ``seconds[0]`` spent before the first epoch (engine set-up, the Gram
        matrix in dual mode, the initial forward pass).
    val_seconds : float
        Total time spent evaluating validation data.
    epochs : int
        Epochs run.
    epochs_to_target : int or None
        First epoch whose monitored loss was below ``target_loss``.
    stopped_reason : str
        ``"max_epochs"``, ``"target_reached"``, ``"callback"``, ``"no_improvement"``
        (``patience`` of fit), ``"diverged"`` or ``"interrupted"``.
    optimizer : str
        The schedule (``"gd"``, ``"pwo"``, ``"layerwise"``).
    update, update_params : str, dict
        The update rule's name and hyper-parameters.
    lr : float
        The learning rate.
    first_layer : str
        How the first layer was computed (``primal``, ``dual`` or ``direct``).
    threads : int
        Threads the kernels used (the request, clamped to the kernels' limit).
    """
    optimizer: str = ""
    lr: float = float("nan")
    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_seconds: float = 0.0
    epochs: int = 0
    epochs_to_target: int = None
    stopped_reason: str = ""
    first_layer: str = "primal"
    update: str = "sgd"
    update_params: dict = field(default_factory=dict)
    threads: int = 1
    setup_seconds: float = 0.0

    @property
    def seconds_to_target(self):
        """Wall time when the target was reached, or None."""
        if self.epochs_to_target is None:
            return None
        return self.seconds[self.epochs_to_target]

    def to_dict(self):
        """A JSON-serialisable dict (non-finite floats become None)."""
        return {k: json_clean(getattr(self, k)) for k in FIELDS}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; fields this version does not know are ignored."""
        kw = {k: v for k, v in d.items() if k in FIELDS}
        hist = cls(**kw)
        for k in ("loss", "val_loss", "val_accuracy"):
            setattr(hist, k, [float("nan") if v is None else v for v in getattr(hist, k)])
        return hist


FIELDS = tuple(History.__dataclass_fields__)
