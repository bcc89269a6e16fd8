"""The DARTS SepConv and DilConv exactly as in DARTS' operations.py, in plain torch.nn: the oracle for
state_dict compatibility and outputs of pyaccel_nas.nn.SepConv/DilConv, and a model for fuse_modules."""

from torch import nn


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


# The separable and dilated convolutions of DARTS' OPS table: name -> (class, kernel_size, padding, dilation).
DARTS_CONVS = {
    "sep_conv_3x3": ("SepConv", 3, 1, 1),
    "sep_conv_5x5": ("SepConv", 5, 2, 1),
    "dil_conv_3x3": ("DilConv", 3, 2, 2),
    "dil_conv_5x5": ("DilConv", 5, 4, 2),
}


def build(namespace, name, C_in, C_out, stride, affine=True):
    """DARTS op ``name`` from ``namespace``'s SepConv/DilConv (this module, or pyaccel_nas.nn)."""
    kind, kernel_size, padding, dilation = DARTS_CONVS[name]
    if kind == "SepConv":
        return namespace.SepConv(C_in, C_out, kernel_size, stride, padding, affine)
    return namespace.DilConv(C_in, C_out, kernel_size, stride, padding, dilation, affine)
