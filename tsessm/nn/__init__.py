"""Pure-torch building blocks (no pandas): the eSSM layer, the deep eSSM and the LSTM net."""
from tsessm.nn.config import ESSMConfig
from tsessm.nn.essm_layer import ESSMLayer
from tsessm.nn.essm_net import ESSMBlock, ESSMNet
from tsessm.nn.lstm_net import LSTMNet

__all__ = ["ESSMConfig", "ESSMLayer", "ESSMBlock", "ESSMNet", "LSTMNet"]
