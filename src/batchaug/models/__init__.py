"""The model zoo: CIFAR architectures, torchvision and timm models behind one registry.

>>> from batchaug.models import build_model, get_spec
>>> model = build_model("resnet20", num_classes=10)
>>> get_spec("resnet20").sba_layers
('features_out',)

Names: the registered ones (``batchaug models`` lists them), ``wrn<depth>_<widen>``,
``tv:<torchvision model>`` and ``timm:<timm model>`` (needs ``pip install batchaug[timm]``).
Every model maps float ``(B, C, H, W)`` images to ``(B, num_classes)`` logits and is randomly
initialised; nothing is ever downloaded. A model with auxiliary heads (``darts_v2`` built with
``auxiliary=True``) returns ``ModelOutput(logits, aux)`` in training mode (:mod:`batchaug.nn.outputs`).
"""

from batchaug.models.alexnet_cifar import CifarAlexNet, alexnet_cifar
from batchaug.models.catalog import register_builtin_models
from batchaug.models.darts import GENOTYPES, DartsNetwork, Genotype
from batchaug.models.densenet_cifar import DenseNetBC, densenet_bc_100_12
from batchaug.models.mobilenet_cifar import CifarMobileNet, mobilenet_cifar
from batchaug.models.registry import (
    FAMILIES,
    ModelSpec,
    build_model,
    count_params,
    get_spec,
    list_models,
    register_model,
)
from batchaug.models.resnet_cifar import CifarResNet, cifar_resnet, resnet20, resnet32, resnet44, resnet56, resnet110
from batchaug.models.vgg_cifar import CifarVGG, vgg16_bn
from batchaug.models.wide_resnet import WideResNet, wrn, wrn28_2, wrn28_10

register_builtin_models()

__all__ = [
    "FAMILIES", "ModelSpec", "build_model", "count_params", "get_spec", "list_models", "register_model",
    "CifarAlexNet", "CifarMobileNet", "CifarResNet", "CifarVGG", "DartsNetwork", "DenseNetBC", "GENOTYPES",
    "Genotype", "WideResNet",
    "alexnet_cifar", "cifar_resnet", "densenet_bc_100_12", "mobilenet_cifar", "resnet20", "resnet32",
    "resnet44", "resnet56", "resnet110", "vgg16_bn", "wrn", "wrn28_2", "wrn28_10",
]
