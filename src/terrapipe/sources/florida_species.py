"""The default DeepEarth species list: central-Florida native plants with the habitat the sample world
places them in (written to data/inputs/species.csv by `terrapipe inputs`)."""

DEFAULT_SPECIES = [  # central-Florida native plants; habitat drives the sample world's observations
    ("Serenoa repens", "upland"), ("Quercus virginiana", "forest"), ("Quercus geminata", "upland"),
    ("Quercus laurifolia", "forest"), ("Pinus elliottii", "forest"), ("Pinus palustris", "upland"),
    ("Pinus clausa", "upland"), ("Taxodium distichum", "wetland"), ("Taxodium ascendens", "wetland"),
    ("Sabal palmetto", "forest"), ("Magnolia grandiflora", "forest"), ("Magnolia virginiana", "wetland"),
    ("Acer rubrum", "wetland"), ("Liquidambar styraciflua", "forest"), ("Myrica cerifera", "disturbed"),
    ("Ilex glabra", "upland"), ("Ilex cassine", "wetland"), ("Lyonia ferruginea", "upland"),
    ("Vaccinium myrsinites", "upland"), ("Callicarpa americana", "forest"), ("Hamelia patens", "disturbed"),
    ("Tillandsia usneoides", "forest"), ("Tillandsia recurvata", "disturbed"), ("Spartina bakeri", "wetland"),
    ("Andropogon virginicus", "disturbed"), ("Aristida stricta", "upland"), ("Pontederia cordata", "aquatic"),
    ("Sagittaria lancifolia", "aquatic"), ("Nymphaea odorata", "aquatic"), ("Nuphar advena", "aquatic"),
    ("Cladium jamaicense", "wetland"), ("Juncus effusus", "wetland"), ("Typha latifolia", "aquatic"),
    ("Hydrocotyle umbellata", "wetland"), ("Bidens alba", "disturbed"), ("Coreopsis leavenworthii", "disturbed"),
    ("Gaillardia pulchella", "disturbed"), ("Helianthus debilis", "disturbed"), ("Liatris spicata", "upland"),
    ("Asclepias tuberosa", "upland"), ("Asclepias incarnata", "wetland"), ("Passiflora incarnata", "disturbed"),
    ("Opuntia humifusa", "upland"), ("Yucca filamentosa", "upland"), ("Zamia integrifolia", "forest"),
    ("Chrysobalanus icaco", "upland"), ("Persea borbonia", "forest"), ("Persea palustris", "wetland"),
    ("Cephalanthus occidentalis", "wetland"), ("Salix caroliniana", "wetland"), ("Sambucus canadensis", "disturbed"),
    ("Rubus trivialis", "disturbed"), ("Vitis rotundifolia", "forest"), ("Smilax auriculata", "upland"),
    ("Lantana involucrata", "upland"), ("Phyla nodiflora", "disturbed"), ("Rhexia mariana", "wetland"),
    ("Sarracenia minor", "wetland"), ("Drosera capillaris", "wetland"), ("Osmunda regalis", "wetland"),
    ("Woodwardia virginica", "wetland"), ("Pteridium aquilinum", "upland"), ("Befaria racemosa", "upland"),
    ("Licania michauxii", "upland"), ("Carphephorus corymbosus", "upland"), ("Pityopsis graminifolia", "upland"),
    ("Eryngium yuccifolium", "upland"), ("Hypericum fasciculatum", "wetland"), ("Lachnanthes caroliana", "wetland"),
]
