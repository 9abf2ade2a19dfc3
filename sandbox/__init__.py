"""The local provider sandbox (CONTRACT section 7).

Engineers: read sandbox/INTERFACE.md first (working rules, git rules, plug-in interface).
"""
