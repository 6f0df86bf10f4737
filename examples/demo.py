# A snippet as an LLM would write it: prints, computes with pandas, plots.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

df = pd.DataFrame({"x": np.arange(10), "y": np.arange(10) ** 2})
print(df.describe().loc[["mean", "max"]])
plt.plot(df.x, df.y, marker="o")
plt.title("y = x^2, drawn inside the sandbox")
plt.show()
