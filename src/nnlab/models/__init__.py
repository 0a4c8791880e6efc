"""Model families. Importing this package registers every family's sizes."""
from nnlab.models import cnn, linear, mlp  # noqa: F401  (imported for their @register side effect)
from nnlab.models import rnn  # noqa: F401  (char_rnn, name_rnn, series_rnn)
from nnlab.models import backbones, resnet, vgg  # noqa: F401  (resnet9, preact_resnet18, vgg, torchvision backbones)
from nnlab.models import seq2seq  # noqa: F401  (the encoder-decoder with attention: not a classifier)
from nnlab.models import transformer  # noqa: F401  (char_transformer: a causal transformer language model)
from nnlab.models import names  # noqa: F401  (name_ngrams, name_ensemble: surname classifiers beyond one net)
from nnlab.models.registry import Example, create_model, list_models, model_example, register

__all__ = ["Example", "create_model", "list_models", "model_example", "register"]
