pub mod symbolize;
