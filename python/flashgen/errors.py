"""Exceptions raised by flashgen beyond the built-in ValueError / TypeError."""


class KernelNotBuiltError(LookupError):
    """The call needs a kernel instantiation this build does not contain."""

    def __init__(self, message: str, kernel_name: str):
        super().__init__(message)
        self.kernel_name = kernel_name

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return self.args[0]


class UnsupportedDeviceError(RuntimeError):
    """The GPU's architecture is not one this build compiled machine code for."""
