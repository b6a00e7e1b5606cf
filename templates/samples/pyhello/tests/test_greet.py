"""Unit tests of pyhello, run by the python-source factory's test step."""
import unittest

import pyhello


class GreetTest(unittest.TestCase):
    def test_default(self):
        self.assertEqual(pyhello.greet(), "Hello, world!")

    def test_name(self):
        self.assertEqual(pyhello.greet("autobot"), "Hello, autobot!")


if __name__ == "__main__":
    unittest.main()
