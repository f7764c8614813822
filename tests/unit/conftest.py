"""Make ``ansible_collections.ferry.hypervisor`` importable when pytest runs from the checkout.

Under ansible-test the collection already sits at .../ansible_collections/ferry/hypervisor.
"""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

if "ansible_collections" not in os.path.abspath(__file__):
    subprocess.run([os.path.join(ROOT, "scripts", "link-collection.sh")], check=True, stdout=subprocess.DEVNULL)
    if os.path.join(ROOT, "collections") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "collections"))
