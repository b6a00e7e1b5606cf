"""pyhello: a greeting, the autobot Python sample package."""


def greet(name="world"):
    """Return the greeting for NAME."""
    return "Hello, %s!" % name
