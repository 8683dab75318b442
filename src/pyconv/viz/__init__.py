"""Pictures (plot: matplotlib Figures, the plot extra) and the report page
(report). Import pyconv.viz.plot or pyconv.viz.report: each needs the extra."""
