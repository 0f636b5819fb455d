"""The built-in model zoo: one :class:`ModelSpec` per name, registered when ``batchaug.models`` loads.

``published_params`` are the figures the sources print, for 10 classes (CIFAR models), 1000 classes
(ImageNet models) or Penn Treebank's 10,000-word vocabulary (language models); ``tests/test_models.py``
and ``tests/test_lstm.py`` check our counts against them.
"""

from __future__ import annotations

from batchaug.models.alexnet_cifar import alexnet_cifar
from batchaug.models.awd_lstm import awd_lstm
from batchaug.models.darts import GENOTYPES, darts_builder
from batchaug.models.densenet_cifar import densenet_bc_100_12
from batchaug.models.external import torchvision_model_spec
from batchaug.models.mobilenet_cifar import mobilenet_cifar
from batchaug.models.registry import ModelSpec, register_model
from batchaug.models.resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from batchaug.models.vgg_cifar import vgg16_bn
from batchaug.models.wide_resnet import wrn28_2, wrn28_10

_HE = "He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016 (section 4.2, Table 6)"
_WRN = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016"
_TV = "parameter count: torchvision model documentation"

_DARTS = ("Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019; genotype and network: "
          "github.com/quark0/darts cnn/genotypes.py, cnn/model.py")
# parameter counts the DARTS sources publish, without the auxiliary head (the reference's count_parameters_in_MB
# skips it): README of github.com/quark0/darts, "2.63% test error rate with 3.3M model params"
_DARTS_PUBLISHED = {"darts_v2": 3_300_000}

_CIFAR_RESNETS = ((resnet20, 20, 270_000), (resnet32, 32, 460_000), (resnet44, 44, 660_000),
                  (resnet56, 56, 850_000), (resnet110, 110, 1_700_000))


def _builtin_specs() -> list[ModelSpec]:
    specs = [
        ModelSpec(name=f"resnet{depth}", builder=fn, family="cifar", input_size=32,
                  description=f"CIFAR ResNet-{depth}, option A (zero-padding identity) shortcuts",
                  published_params=published, sba_layers=("features_out",), citation=_HE)
        for fn, depth, published in _CIFAR_RESNETS
    ]
    specs += [
        ModelSpec(name="wrn28_10", builder=wrn28_10, family="cifar", input_size=32,
                  description="Wide ResNet-28-10 (pre-activation; dropout= option)",
                  published_params=36_500_000, sba_layers=("features_out",), citation=_WRN),
        ModelSpec(name="wrn28_2", builder=wrn28_2, family="cifar", input_size=32,
                  description="Wide ResNet-28-2 (pre-activation; dropout= option)",
                  published_params=1_500_000, sba_layers=("features_out",),
                  citation=_WRN + "; 1.5M: Oliver et al., Realistic Evaluation of Deep Semi-Supervised "
                  "Learning Algorithms, NeurIPS 2018"),
        ModelSpec(name="vgg16_bn", builder=vgg16_bn, family="cifar", input_size=32,
                  description="VGG-16 with BN for 32x32, FC head 512-512-classes with BN1d + dropout",
                  published_params=None, sba_layers=("classifier.relu1", "classifier.relu2"),
                  citation="Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (config D) "
                  "+ Ioffe & Szegedy, Batch Normalization, ICML 2015"),
        ModelSpec(name="alexnet_cifar", builder=alexnet_cifar, family="cifar", input_size=32,
                  description="AlexNet for 32x32: 5 conv (64-192-384-256-256) + FC 4096-1024-1024-classes, BN",
                  published_params=None, sba_layers=("classifier.relu1", "classifier.relu2"),
                  citation="Krizhevsky, One weird trick for parallelizing CNNs, 2014; with BN as in "
                  "Hoffer et al.'s convNet.pytorch AlexNetOWT_BN, scaled for 32x32"),
        ModelSpec(name="densenet_bc_100_12", builder=densenet_bc_100_12, family="cifar", input_size=32,
                  description="DenseNet-BC-100, growth rate 12, compression 0.5",
                  published_params=800_000, sba_layers=("features_out",),
                  citation="Huang, Liu, van der Maaten & Weinberger, Densely Connected Convolutional "
                  "Networks, CVPR 2017 (Table 2)"),
        ModelSpec(name="mobilenet_cifar", builder=mobilenet_cifar, family="cifar", input_size=32,
                  description="MobileNet v1 for 32x32 (stride-1 stem; width_mult= option)",
                  published_params=None, sba_layers=("features_out",),
                  citation="Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile "
                  "Vision Applications, 2017"),
    ]
    # one model per genotype of the table: another genotype is another entry there, nothing here
    specs += [
        ModelSpec(name=name, builder=darts_builder(name), family="cifar", input_size=32,
                  description=f"DARTS network, genotype {name.upper()} (36 channels, 20 cells; auxiliary=, "
                  "channels=, layers= options)",
                  published_params=_DARTS_PUBLISHED.get(name), sba_layers=("features_out",), citation=_DARTS)
        for name in GENOTYPES
    ]
    specs += [
        torchvision_model_spec("resnet50", "resnet50", "torchvision ResNet-50 (ImageNet, random init)",
                               25_557_032, "He et al., CVPR 2016; " + _TV),
        torchvision_model_spec("alexnet", "alexnet", "torchvision AlexNet (ImageNet, 'one weird trick' widths)",
                               61_100_840, "Krizhevsky, One weird trick for parallelizing CNNs, 2014; " + _TV),
        torchvision_model_spec("vgg16_bn", "vgg16_bn_imagenet", "torchvision VGG-16 with BN (ImageNet)",
                               138_365_992, "Simonyan & Zisserman, ICLR 2015; " + _TV),
        torchvision_model_spec("mobilenet_v2", "mobilenet_v2", "torchvision MobileNet v2 (ImageNet)",
                               3_504_872, "Sandler et al., MobileNetV2, CVPR 2018; " + _TV),
        ModelSpec(name="awd_lstm", builder=awd_lstm, family="text", input_size=None,
                  description="AWD-LSTM word-level LM: 3 weight-dropped LSTM layers 1150 (last 400), tied 400-d "
                  "embedding, locked/embedding dropout, AR/TAR",
                  published_params=24_000_000, sba_layers=(),
                  citation="Merity, Keskar & Socher, Regularizing and Optimizing LSTM Language Models, ICLR 2018 "
                  "(arXiv:1708.02182; 24M parameters on PTB, Table 1)"),
    ]
    return specs


def register_builtin_models() -> None:
    """Register the zoo (called once by ``batchaug.models``)."""
    for spec in _builtin_specs():
        register_model(spec)
