"""TunedLauncher (flashkernel/triton/_autotune.py): the autotuner runs once per tuning key, later
calls of that key launch its choice directly, and keys never share a choice. CPU only: stand-ins
record what the autotuner and the kernel were asked to do."""
from flashkernel.triton._autotune import TunedLauncher


class _Config:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def all_kwargs(self):
        return dict(self.kwargs)


class _Kernel:
    """kernel[grid](*args, **kwargs) records (grid, args, kwargs)."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


class _Autotuner(_Kernel):
    """Picks choices[i] for its i-th tuning; fn is the underlying kernel."""

    def __init__(self, choices):
        super().__init__()
        self.fn = _Kernel()
        self.choices = list(choices)
        self.best_config = None

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.best_config = self.choices[len(self.calls)]
            self.calls.append((grid, args, kwargs))
        return run


def test_tunes_once_per_key_then_launches_the_choice():
    tuner = _Autotuner([_Config(BLOCK=64, num_warps=4), _Config(BLOCK=128, num_warps=8)])
    launch = TunedLauncher(tuner)

    def grid(meta):
        return (1000 // meta["BLOCK"],)

    launch("key-a", grid, "x", 7, FLAG=True)
    assert len(tuner.calls) == 1 and tuner.calls[0][1:] == (("x", 7), {"FLAG": True})
    assert tuner.fn.calls == []
    launch("key-a", grid, "y", 8, FLAG=True)
    launch("key-a", grid, "z", 9, FLAG=False)
    assert len(tuner.calls) == 1
    assert tuner.fn.calls == [((15,), ("y", 8), {"FLAG": True, "BLOCK": 64, "num_warps": 4}),
                              ((15,), ("z", 9), {"FLAG": False, "BLOCK": 64, "num_warps": 4})]
    # A new key tunes again and keeps its own choice; the first key's choice is unchanged.
    launch("key-b", grid, "w", 1)
    assert len(tuner.calls) == 2
    launch("key-b", grid, "w", 2)
    launch("key-a", grid, "v", 3)
    assert tuner.fn.calls[-2:] == [((7,), ("w", 2), {"BLOCK": 128, "num_warps": 8}),
                                   ((15,), ("v", 3), {"BLOCK": 64, "num_warps": 4})]
