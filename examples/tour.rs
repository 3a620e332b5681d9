fn main() { println!("tour"); }
