using System.Globalization;
using System.Text;

namespace eMoE.Cli.Bench;

/// <summary>
/// A grouped bar chart written as SVG: groups along x (e.g. budgets), one bar per series (e.g.
/// policies); the y axis runs from <c>yMin</c> (default 0) to <c>yMax</c>.
/// </summary>
internal static class SvgChart
{
    private static readonly string[] Colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"];

    public static string GroupedBars(string title, string yLabel, IReadOnlyList<string> groups, IReadOnlyList<(string Name, double[] Values)> series, double yMax,
        double yMin = 0)
    {
        const int width = 760, height = 420, left = 70, right = 170, top = 40, bottom = 60;
        double plotW = width - left - right, plotH = height - top - bottom;
        double groupW = plotW / groups.Count, barW = groupW * 0.8 / series.Count;
        var svg = new StringBuilder();
        string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n");
        for (int i = 0; i <= 5; i++)
        {
            double v = yMin + (yMax - yMin) * i / 5, y = top + plotH - plotH * i / 5;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" x2=\"{F(left + plotW)}\" y1=\"{F(y)}\" y2=\"{F(y)}\" stroke=\"#ddd\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 6}\" y=\"{F(y + 4)}\" text-anchor=\"end\">{F(v)}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(18,{F(top + plotH / 2)}) rotate(-90)\" text-anchor=\"middle\">{yLabel}</text>\n");
        for (int g = 0; g < groups.Count; g++)
        {
            double x0 = left + g * groupW + groupW * 0.1;
            for (int s = 0; s < series.Count; s++)
            {
                double v = Math.Clamp(series[s].Values[g], yMin, yMax), h = plotH * (v - yMin) / (yMax - yMin);
                svg.Append(CultureInfo.InvariantCulture,
                    $"<rect x=\"{F(x0 + s * barW)}\" y=\"{F(top + plotH - h)}\" width=\"{F(barW - 1)}\" height=\"{F(h)}\" fill=\"{Colors[s % Colors.Length]}\"/>\n");
            }
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(left + g * groupW + groupW / 2)}\" y=\"{F(top + plotH + 18)}\" text-anchor=\"middle\">{groups[g]}</text>\n");
        }
        for (int s = 0; s < series.Count; s++)
        {
            double y = top + 10 + s * 20;
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{F(left + plotW + 15)}\" y=\"{F(y - 10)}\" width=\"12\" height=\"12\" fill=\"{Colors[s % Colors.Length]}\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(left + plotW + 32)}\" y=\"{F(y)}\">{series[s].Name}</text>\n");
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }
}
