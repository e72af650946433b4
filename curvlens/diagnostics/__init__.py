"""curvlens.diagnostics"""
