"""Class names, palettes and drivable classes of the supported datasets."""

from __future__ import annotations

from ..core.metrics import IGNORE_INDEX  # noqa: F401 (re-exported: datasets.IGNORE_INDEX)

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                  (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                  (0, 128, 192))
CAMVID_DRIVABLE = ("Road",)

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                      (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                      (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
                      (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230),
                      (119, 11, 32))
CITYSCAPES_DRIVABLE = ("road",)
#: Cityscapes label id -> train id (others are ignored).
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
                             22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
                             32: 17, 33: 18}

KITTI_ROAD_CLASSES = ("not road", "road")
KITTI_ROAD_PALETTE = ((0, 0, 0), (255, 0, 255))
KITTI_ROAD_DRIVABLE = ("road",)

IDD_LITE_CLASSES = ("drivable", "non-drivable", "living things", "vehicles", "roadside objects",
                    "far objects", "sky")
IDD_LITE_PALETTE = ((128, 64, 128), (244, 35, 232), (220, 20, 60), (0, 0, 142), (190, 153, 153),
                    (107, 142, 35), (70, 130, 180))
IDD_LITE_DRIVABLE = ("drivable",)

#: What each IDD-Lite level-1 class means in CamVid's 11 classes: the set of CamVid classes a
#: pixel of that IDD class may take (the set-valued, partial-label target of training).
#: IDD "drivable" (road, parking, unpaved fallback) is Road; IDD "non-drivable" (sidewalk, rail
#: track, non-drivable fallback such as dirt or grass verges) is Pavement or Tree (CamVid files
#: verges under Tree/VegetationMisc); "roadside objects" (curb, wall, fence, guard rail, pole,
#: sign, traffic light, billboard) are Pole, SignSymbol, Fence, Building (walls) or Pavement
#: (curbs); "far objects" (building, bridge, vegetation) are Building or Tree; riders count as
#: CamVid Bicyclist, so living things are Pedestrian or Bicyclist and two-wheelers are Car or
#: Bicyclist. No IDD class but "drivable" allows Road, so IDD never teaches Road outside its
#: drivable area.
IDD_LITE_TO_CAMVID: dict[str, tuple[str, ...]] = {
    "drivable": ("Road",),
    "non-drivable": ("Pavement", "Tree"),
    "living things": ("Pedestrian", "Bicyclist"),
    "vehicles": ("Car", "Bicyclist"),
    "roadside objects": ("Pole", "SignSymbol", "Fence", "Building", "Pavement"),
    "far objects": ("Building", "Tree"),
    "sky": ("Sky",),
}

#: The looser reading of IDD-Lite (``idd_lite_loose``): IDD "drivable" (road, parking, unpaved
#: fallback) is Road or Pavement, as CamVid's own 11-class merge files ParkingBlock and
#: RoadShoulder under Pavement. Road/Pavement is then taught by CamVid and Cityscapes alone, and
#: IDD no longer teaches unpaved shoulders as Road (stage 5, docs/results/stages.md).
IDD_LITE_LOOSE_TO_CAMVID: dict[str, tuple[str, ...]] = {
    **IDD_LITE_TO_CAMVID, "drivable": ("Road", "Pavement")}

#: Cityscapes at low resolution (the pix2pix edition, ``cityscapes_p2p``): the label ids it
#: keeps, each as a class of its own, so road, sidewalk, parking, rail track and terrain stay
#: apart (the boundary the drivable mask must learn). Id 0 is ignore.
CITYSCAPES_P2P_IDS: dict[int, str] = {
    7: "road", 8: "sidewalk", 9: "parking", 10: "rail track", 6: "ground", 22: "terrain",
    21: "vegetation", 11: "building", 12: "wall", 13: "fence", 14: "guard rail", 15: "bridge",
    16: "tunnel", 17: "pole", 19: "traffic light", 20: "traffic sign", 23: "sky",
    24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 29: "caravan",
    30: "trailer", 31: "train", 32: "motorcycle", 33: "bicycle"}
CITYSCAPES_P2P_CLASSES = tuple(CITYSCAPES_P2P_IDS.values())
CITYSCAPES_P2P_DRIVABLE = ("road",)
#: Scored as neither drivable nor not drivable, as the Cityscapes benchmark ignores them.
CITYSCAPES_P2P_DRIVABLE_IGNORE = ("parking", "rail track")
_CS_COLOURS = {"road": (128, 64, 128), "sidewalk": (244, 35, 232), "parking": (250, 170, 160),
               "rail track": (230, 150, 140), "ground": (81, 0, 81), "terrain": (152, 251, 152),
               "vegetation": (107, 142, 35), "building": (70, 70, 70), "wall": (102, 102, 156),
               "fence": (190, 153, 153), "guard rail": (180, 165, 180),
               "bridge": (150, 100, 100), "tunnel": (150, 120, 90), "pole": (153, 153, 153),
               "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
               "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0),
               "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100),
               "caravan": (0, 0, 90), "trailer": (0, 0, 110), "train": (0, 80, 100),
               "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32)}
CITYSCAPES_P2P_PALETTE = tuple(_CS_COLOURS[name] for name in CITYSCAPES_P2P_CLASSES)

#: Each Cityscapes class in CamVid's 11 classes (the set-valued target of training). Only
#: "road" allows Road: sidewalks and bike paths are Pavement; parking (CamVid files ParkingBlock
#: under Pavement; Cityscapes' benchmark ignores it) may be Road or Pavement; rail-track beds,
#: "ground" (traffic islands, kerbed medians) and terrain (grass verges, soil) are Pavement or
#: Tree (CamVid's VegetationMisc is Tree), never Road. Walls and fences are Building or Fence:
#: the two datasets draw that boundary differently, and stage 3, which taught Cityscapes fences
#: as Fence, cost CamVid's Fence 8 points, so CamVid alone decides it; guard rails are Fence;
#: bridges and tunnels Building; traffic lights and signs SignSymbol; every motor vehicle Car;
#: riders, bicycles and motorcycles Bicyclist (CamVid's MotorcycleScooter is in Bicyclist).
CITYSCAPES_P2P_TO_CAMVID: dict[str, tuple[str, ...]] = {
    "road": ("Road",), "sidewalk": ("Pavement",), "parking": ("Road", "Pavement"),
    "rail track": ("Pavement", "Tree"), "ground": ("Pavement", "Tree"),
    "terrain": ("Tree", "Pavement"), "vegetation": ("Tree",), "building": ("Building",),
    "wall": ("Building", "Fence"), "fence": ("Fence", "Building"), "guard rail": ("Fence",),
    "bridge": ("Building",), "tunnel": ("Building",), "pole": ("Pole",),
    "traffic light": ("SignSymbol",), "traffic sign": ("SignSymbol",), "sky": ("Sky",),
    "person": ("Pedestrian",), "rider": ("Bicyclist",), "car": ("Car",), "truck": ("Car",),
    "bus": ("Car",), "caravan": ("Car",), "trailer": ("Car",), "train": ("Car",),
    "motorcycle": ("Bicyclist",), "bicycle": ("Bicyclist",)}
