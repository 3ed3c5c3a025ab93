"""The one exception type of ssnet_ros."""


class SSNetError(Exception):
    """A problem the user can act on: bad weights file, bad parameter, bad dataset, bad bag."""
