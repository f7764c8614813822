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
      - Modules run the engine's command, C(<engine_venv>/bin/ferry --json), and nothing else of
        it; the Python running the module never imports the engine.
    type: path
    default: /opt/ferry/venv
requirements:
  - The Ferry engine on the managed host, installed by the P(ferry.hypervisor.engine#role) role
    (its own virtual environment, Python 3.11 or newer).
  - Any Python that ansible-core supports on the managed host; it need not be the engine's
    Python version.
'''
