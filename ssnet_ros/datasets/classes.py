"""Class names, palettes and drivable classes of the supported datasets."""

from __future__ import annotations

IGNORE_INDEX = 255

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
