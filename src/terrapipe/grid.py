"""Each site's chip grid: its UTM zone's 10 m grid, origin snapped to 60 m so that the 20, 30 and 60 m
native grids of S2 and Landsat nest inside it. Every imagery backend writes onto this grid."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_M = 10.0
GRID_SNAP_M = 60.0


@dataclass(frozen=True)
class SiteGrid:
    """A site's chip on its UTM zone's 10 m grid."""
    epsg: int
    x0: float  # west edge (m)
    y0: float  # north edge (m)
    size: int

    @property
    def transform(self):
        from rasterio.transform import from_origin
        return from_origin(self.x0, self.y0, PIXEL_M, PIXEL_M)

    def pixel_lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude of every pixel centre, each (size, size)."""
        from pyproj import Transformer
        centres = (np.arange(self.size) + 0.5) * PIXEL_M
        xx, yy = np.meshgrid(self.x0 + centres, self.y0 - centres)
        lon, lat = Transformer.from_crs(self.epsg, 4326, always_xy=True).transform(xx, yy)
        return lat, lon


def site_grid(lat: float, lon: float, size: int) -> SiteGrid:
    """The chip centred (to within 30 m) on a site, on the 60 m-aligned UTM grid of its zone."""
    from pyproj import Transformer

    from terrapipe.study import utm_epsg
    epsg = utm_epsg(lat, lon)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    half = size * PIXEL_M / 2
    x0 = np.round((x - half) / GRID_SNAP_M) * GRID_SNAP_M
    y0 = np.round((y + half) / GRID_SNAP_M) * GRID_SNAP_M
    return SiteGrid(epsg, float(x0), float(y0), size)
