"""ament_python package: installs with colcon in a ROS 2 workspace or with pip into a venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ssnet_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["weights/*.pt", "weights/*.json", "weights/*.md",
                            "samples/*.jpg", "samples/*.yaml", "samples/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="ssnet_ros maintainers",
    maintainer_email="maintainers@ssnet-ros.invalid",
    description="SSNet / FCN-8s semantic segmentation node for ROS 2",
    license="MIT",
    extras_require={"test": ["pytest"], "ray": ["ray[client]==2.60.0"]},
    entry_points={
        "console_scripts": [
            "segmentation_node = ssnet_ros.node:main",
            "segmentation_lifecycle_node = ssnet_ros.lifecycle_node:main",
            "ssnet-train = ssnet_ros.training.train:main",
            "ssnet-eval = ssnet_ros.training.evaluate:main",
            "ssnet-demo = ssnet_ros.tools.demo:main",
            "ssnet-eval-bag = ssnet_ros.bags.evaluate:main",
            "ssnet-replay = ssnet_ros.bags.replay:main",
            "ssnet-make-bag = ssnet_ros.bags.make:main",
            "ssnet-export = ssnet_ros.tools.export:main",
            "ssnet-benchmark = ssnet_ros.tools.benchmark:main",
            "ssnet-compare-runs = ssnet_ros.training.compare_runs:main",
            "ssnet-sheet = ssnet_ros.tools.sheet:main",
            "ssnet-ship = ssnet_ros.training.ship:main",
            "ssnet-drivable-curve = ssnet_ros.tools.drivable_curve:main",
            "ssnet-fit-trust = ssnet_ros.training.fit_trust:main",
            "ssnet-calibrate = ssnet_ros.tools.calibrate:main",
            "ssnet-interpolate = ssnet_ros.training.interpolate:main",
        ],
    },
)
