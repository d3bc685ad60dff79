//! Export to the ecosystem: a standalone PyTorch module whose `load_state_dict` takes an eatnas
//! `model.safetensors` as it is (same parameter names), and whose forward gives the same logits.

use crate::checkpoint::ModelInfo;

/// The Python source of a PyTorch module for `info`'s architecture, with the architecture, the
/// input normalisation and the class count embedded.
pub fn pytorch_module(info: &ModelInfo) -> String {
    let arch = serde_json::to_string(&info.arch).expect("an architecture serialises");
    let normalize = serde_json::to_string(&info.normalize).expect("normalisation serialises");
    TEMPLATE
        .replace("@ARCH@", &arch)
        .replace("@NORMALIZE@", &normalize)
        .replace("@IN_CHANNELS@", &info.in_channels.to_string())
        .replace("@CLASSES@", &info.classes.to_string())
        .replace("@RESOLUTION@", &info.resolution.to_string())
}

const TEMPLATE: &str = r#""""A standalone PyTorch module of an eatnas network (format eatnas-arch/1), written by
`eatnas-cli export`. Parameter and buffer names are those of eatnas checkpoints, so

    model = EatNet()
    model.load_state_dict(safetensors.torch.load_file("model.safetensors"))

loads an eatnas checkpoint as it is, and weights trained here load back into eatnas.

Inputs: float tensors (N, IN_CHANNELS, RESOLUTION, RESOLUTION) of pixels scaled to [0, 1] and
normalised per channel with NORMALIZE (`normalize()` below does it).
"""
import json

import torch
from torch import nn

ARCH = json.loads(r'''@ARCH@''')
NORMALIZE = json.loads(r'''@NORMALIZE@''')
IN_CHANNELS = @IN_CHANNELS@
CLASSES = @CLASSES@
RESOLUTION = @RESOLUTION@


class ConvBN(nn.Module):
    """Bias-free convolution (padding kernel // 2) -> BatchNorm2d -> optional ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        # eatnas checkpoints carry no batch counter: drop the buffer so that names match exactly.
        self.bn.register_buffer("num_batches_tracked", None)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class MBConv(nn.Module):
    def __init__(self, cin, cout, expansion, kernel, stride, residual):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden, 1)
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, relu=False)
        self.residual = residual

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class SepConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, residual):
        super().__init__()
        self.depthwise = ConvBN(cin, cin, kernel, stride, groups=cin)
        self.pointwise = ConvBN(cin, cout, 1)
        self.residual = residual

    def forward(self, x):
        y = self.pointwise(self.depthwise(x))
        return x + y if self.residual else y


class Head(nn.Module):
    def __init__(self, cin, channels):
        super().__init__()
        self.conv = nn.Conv2d(cin, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.bn.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class EatNet(nn.Module):
    def __init__(self, arch=ARCH, in_channels=IN_CHANNELS, classes=CLASSES):
        super().__init__()
        stem = arch["stem"]
        self.stem = ConvBN(in_channels, stem["channels"], stem["kernel"], stem["stride"])
        cin = stem["channels"]
        self.blocks = nn.ModuleList()
        for block in arch["blocks"]:
            cout = int(block["base_channels"] * block["width"])
            layers = nn.ModuleList()
            for i in range(block["layers"]):
                stride = block["stride"] if i == 0 else 1
                residual = block["skip"] and stride == 1 and cin == cout
                if block["op"] == "sep":
                    layers.append(SepConv(cin, cout, block["kernel"], stride, residual))
                else:
                    expansion = {"mb3": 3, "mb6": 6}[block["op"]]
                    layers.append(MBConv(cin, cout, expansion, block["kernel"], stride, residual))
                cin = cout
            self.blocks.append(layers)
        self.head = Head(cin, arch["head"]["channels"])
        self.classifier = nn.Linear(arch["head"]["channels"], classes)

    def forward(self, x):
        x = self.stem(x)
        for layers in self.blocks:
            for layer in layers:
                x = layer(x)
        x = self.head(x).mean(dim=(2, 3))
        return self.classifier(x)


def normalize(pixels):
    """(N, C, H, W) pixels in [0, 1] -> the network's input."""
    mean = torch.tensor(NORMALIZE["mean"], dtype=pixels.dtype).view(1, -1, 1, 1)
    std = torch.tensor(NORMALIZE["std"], dtype=pixels.dtype).view(1, -1, 1, 1)
    return (pixels - mean) / std


def load(path):
    """An EatNet with the weights of an eatnas model.safetensors, in eval mode."""
    from safetensors.torch import load_file

    model = EatNet()
    model.load_state_dict(load_file(path))
    return model.eval()
"#;
