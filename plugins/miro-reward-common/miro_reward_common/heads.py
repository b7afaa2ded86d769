"""The linear score head shared by the LAION aesthetic predictor and ImageReward.

``Linear(d, 1024) -> Dropout(0.2) -> Linear(1024, 128) -> Dropout(0.2) -> Linear(128, 64) -> Dropout(0.1)
-> Linear(64, 16) -> Linear(16, 1)``, no activations. Built as ``nn.Sequential`` so the parameters are
named ``layers.{0,2,4,6,7}.{weight,bias}`` exactly as in both checkpoints.
"""

from __future__ import annotations

from typing import Any

HIDDEN = (1024, 128, 64, 16)


def build_linear_head(in_features: int) -> Any:
    from torch import nn

    class LinearHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(in_features, HIDDEN[0]),
                nn.Dropout(0.2),
                nn.Linear(HIDDEN[0], HIDDEN[1]),
                nn.Dropout(0.2),
                nn.Linear(HIDDEN[1], HIDDEN[2]),
                nn.Dropout(0.1),
                nn.Linear(HIDDEN[2], HIDDEN[3]),
                nn.Linear(HIDDEN[3], 1),
            )

        def forward(self, x: Any) -> Any:
            return self.layers(x)

    return LinearHead().eval()


def head_input_size(state_dict: dict[str, Any], prefix: str = "") -> int | None:
    weight = state_dict.get(f"{prefix}layers.0.weight")
    return int(weight.shape[1]) if weight is not None and weight.ndim == 2 else None
