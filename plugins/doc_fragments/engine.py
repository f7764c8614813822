# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  state_dir:
    description:
      - The Ferry state directory on the managed host, holding one folder per VM.
      - When not set, the engine uses the E(FERRY_STATE_DIR) environment variable of the
        module process, else C(/var/lib/ferry).
    type: path
  engine_venv:
    description:
      - The virtual environment the P(ferry.hypervisor.engine#role) role installed the engine into.
      - Used only when the Python running the module cannot import the engine by itself.
    type: path
    default: /opt/ferry/venv
requirements:
  - The Ferry engine on the managed host, installed by the P(ferry.hypervisor.engine#role) role.
  - Python 3.11 or newer on the managed host.
'''
