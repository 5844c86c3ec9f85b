"""A third-party measure, registered only through its entry point (no decorator here)."""

from complexity_zoo import Measure


class MaxAbsWeight(Measure):
    """Largest absolute parameter value (max norm of the flattened weights)."""

    def compute(self, model, data=None):
        return max(float(p.detach().abs().max()) for p in model.parameters())
