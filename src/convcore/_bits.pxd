# The gradient through a fused ReLU, one element: shared by _conv and _linear.

cdef union _FloatBits:
    float f
    unsigned int u


cdef inline float keep_where_positive(float dy, float y) noexcept nogil:
    """dy where y > 0, else +0: a bitwise AND with an all-ones or all-zeros mask.
    Branch-free (a branch on random signs mispredicts half the time; this loop
    vectorises) and exact (a masked NaN gives 0). Through a union, not a pointer
    cast: reading a float through an unsigned int pointer breaks C's aliasing
    rules, which -O3 may exploit."""
    cdef _FloatBits b
    b.f = dy
    b.u = b.u & (0u - <unsigned int>(y > 0))
    return b.f
