"""ament_python package: installs with colcon in a ROS 2 workspace or with pip into a venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ssnet_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["weights/*.pt", "weights/*.json", "weights/*.md"]},
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
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "segmentation_node = ssnet_ros.node:main",
            "ssnet-train = ssnet_ros.train:main",
            "ssnet-eval = ssnet_ros.evaluate:main",
            "ssnet-demo = ssnet_ros.demo:main",
            "ssnet-eval-bag = ssnet_ros.bag_eval:main",
            "ssnet-replay = ssnet_ros.bag_replay:main",
            "ssnet-make-bag = ssnet_ros.bag_make:main",
            "ssnet-export = ssnet_ros.export:main",
            "ssnet-benchmark = ssnet_ros.benchmark:main",
            "ssnet-compare-runs = ssnet_ros.compare_runs:main",
            "ssnet-sheet = ssnet_ros.sheet:main",
            "ssnet-ship = ssnet_ros.ship:main",
        ],
    },
)
