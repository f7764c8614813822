"""Inventory plugins are loaded by name (``ferry.hypervisor.ferry``) through Ansible's collection
loader, which must import the collection's packages itself. ansible-test installs it before any
test is imported; from the checkout (tests/unit/conftest.py puts the linked collection on
sys.path) it is installed here, before the tests of this folder import anything of the collection.
"""

import os
import sys

from ansible.utils.collection_loader import AnsibleCollectionConfig

if AnsibleCollectionConfig.collection_finder is None:
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    # Collection packages imported before as plain namespace packages lack the loader's metadata.
    for name in [name for name in sys.modules if name == "ansible_collections" or name.startswith("ansible_collections.")]:
        del sys.modules[name]
    _AnsibleCollectionFinder(paths=[os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 7))])._install()
