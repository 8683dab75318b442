# The geometry of a sliding window over one NHWC image, resolved in Python
# (convcore/_checks.py) before any kernel runs. All sizes are >= 1 except the
# top/left padding (>= 0). Output position (oh, ow) reads input rows
# oh*SH - PT + i for i < KH, and columns ow*SW - PL + j for j < KW.
ctypedef struct Window:
    Py_ssize_t H, W, C      # input height, width, channels
    Py_ssize_t KH, KW       # window (kernel or pool) size
    Py_ssize_t SH, SW       # stride
    Py_ssize_t PT, PL       # top and left padding
    Py_ssize_t OH, OW       # output height and width
