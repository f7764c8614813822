# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # What every module of the collection shares: the action group and the hosts it runs on.
    # check_mode and diff_mode differ from module to module and stay in each module, except
    # for the modules that only read (INFO_MODULE below).
    DOCUMENTATION = r'''
attributes:
  action_group:
    description: Use C(group/ferry.hypervisor.ferry) in C(module_defaults) to set its options.
    support: full
    membership:
      - ferry.hypervisor.ferry
  platform:
    description: Linux hosts with a usable C(/dev/kvm), where the P(ferry.hypervisor.engine#role) role
      installs the engine; tested on Debian 12.
    support: full
    platforms: linux
'''

    # The modules that only read the host: the same run in and out of check mode, no diff.
    INFO_MODULE = r'''
attributes:
  check_mode:
    support: full
    description: Reads the same facts as a real run; nothing is changed either way.
  diff_mode:
    support: none
    description: Changes nothing, so there is no difference to show.
'''
