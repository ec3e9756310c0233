"""PASTIS's layout (Garnot & Landrieu 2021, PASTIS-R): reader and writer."""
from __future__ import annotations

import numpy as np

from terrapipe.data.tasks import IGNORE_LABEL

# PASTIS's nomenclature: 0 background, 1-18 crop types; 19 (void: parcel borders, unlabelled) is ignored.
CLASSES = ("Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed", "Spring barley",
           "Sunflower", "Grapevine", "Beet", "Winter triticale", "Winter durum wheat", "Fruits, vegetables, flowers",
           "Potatoes", "Leguminous fodder", "Soybeans", "Orchard", "Mixed cereal", "Sorghum")
VOID = 19


def _land_use_table() -> np.ndarray:
    """Sample-world land-use code -> PASTIS class (background where PASTIS has none, e.g. rice; void margins)."""
    from terrapipe.sources.landscape import BY_NAME

    table = np.zeros(256, np.int64)
    for name, label in {"pasture": "Meadow", "winter_wheat": "Soft winter wheat", "maize": "Corn",
                        "winter_barley": "Winter barley", "rapeseed": "Winter rapeseed", "sunflower": "Sunflower",
                        "vineyard": "Grapevine", "sugar_beet": "Beet", "soybean": "Soybeans",
                        "orchard": "Orchard"}.items():
        table[BY_NAME[name].code] = CLASSES.index(label)
    table[BY_NAME["field_margin"].code] = IGNORE_LABEL
    return table


LABEL_OF_LAND_USE = _land_use_table()
