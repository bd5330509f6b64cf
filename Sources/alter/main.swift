print("alter")
