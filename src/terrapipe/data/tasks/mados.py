"""MADOS's layout (Kikaki et al. 2024, marine debris and oil spills): reader and writer."""
from __future__ import annotations

import numpy as np

from terrapipe.data.tasks import IGNORE_LABEL

# MADOS's 15 classes (mask values 1..15; 0 = not annotated, ignored). Label index = mask value - 1.
CLASSES = ("Marine Debris", "Dense Sargassum", "Sparse Floating Algae", "Natural Organic Material", "Ship",
           "Oil Spill", "Marine Water", "Sediment-Laden Water", "Foam", "Turbid Water", "Shallow Water",
           "Waves & Wakes", "Oil Platform", "Jellyfish", "Sea snout")


def _land_use_table() -> np.ndarray:
    """Sample-world sea-surface code -> MADOS label index (land and lakes are not annotated)."""
    from terrapipe.sources.landscape import BY_NAME

    table = np.full(256, IGNORE_LABEL, np.int64)
    for name, label in {"marine_debris": "Marine Debris", "sargassum": "Dense Sargassum", "ship": "Ship",
                        "marine_water": "Marine Water", "sediment_laden_water": "Sediment-Laden Water",
                        "foam": "Foam", "turbid_water": "Turbid Water", "shallow_water": "Shallow Water"}.items():
        table[BY_NAME[name].code] = CLASSES.index(label)
    return table


LABEL_OF_LAND_USE = _land_use_table()
